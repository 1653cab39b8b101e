//! Checks of values the fleet file hands to something that could act on
//! them beyond what hangar means: a libvirt URI that runs a program, a URL
//! that carries credentials, a path or word that lands in a guest's file
//! (fstab, systemd units, shell and env files) and could break its syntax.
//! Each returns why the value is refused, `None` when it is fine. Pure.

/// libvirt transports (`driver+transport://`) that spawn a local program
/// (ssh, or any program for `ext`).
const SSH_TRANSPORTS: &[&str] = &["ssh", "libssh", "libssh2"];

/// URI parameters that name a program or a command line libvirt runs
/// (`command` locally; `netcat`, `socket` and `proxy` go into the command
/// line ssh runs on the remote host). See libvirt's remote URI docs
/// ("Extra parameters").
const PROGRAM_PARAMS: &[&str] = &["command", "netcat", "socket", "proxy"];

/// Why `uri` makes libvirt run a program the file names, if it does.
pub fn uri_runs_a_program(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let transport = scheme.split_once('+').map(|(_, t)| t.to_ascii_lowercase());
    if transport.as_deref() == Some("ext") {
        return Some("the `ext` transport runs the program the URI's `command=` names".to_string());
    }
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
    let ssh = transport
        .as_deref()
        .is_some_and(|t| SSH_TRANSPORTS.contains(&t));
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map(|(k, _)| k).unwrap_or(pair);
        let key = key.to_ascii_lowercase();
        if key == "command" || (ssh && PROGRAM_PARAMS.contains(&key.as_str())) {
            return Some(format!(
                "URI parameter `{key}=` makes libvirt run a program or a command line"
            ));
        }
    }
    None
}

/// Why an http(s) `url` is refused for carrying credentials (userinfo),
/// if it does. Found with the literal secrets, so that the error's snippet
/// masks it.
pub fn url_has_credentials(url: &str) -> Option<String> {
    let u = url::Url::parse(url.trim()).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Some(
            "the URL carries credentials (user:password@): give them in `auth`, never in a URL"
                .to_string(),
        );
    }
    None
}

/// Why `path` cannot be written into a guest's `/etc/fstab`, a systemd
/// unit or a shell line as it is: only an absolute, normalized path of
/// plain characters (letters, digits, `/ . _ - + @`) passes.
pub fn guest_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some("must be an absolute path".into());
    }
    if let Some(c) = path.chars().find(|c| !plain_path_char(*c)) {
        return Some(format!(
            "contains {c:?}: a guest path may hold only letters, digits and `/ . _ - + @` \
             (it is written into /etc/fstab, systemd units and shell lines)"
        ));
    }
    if path.split('/').any(|part| part == "." || part == "..") {
        return Some("must not contain `.` or `..` components".into());
    }
    None
}

fn plain_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | '@')
}

/// Why a host path (an image on the host) is not normalized: `..` and `.`
/// components, or anything but one `/` between them, would let a path
/// that reads as inside a directory point outside it.
pub fn host_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some("must be an absolute path".into());
    }
    if path.contains("//") || path.split('/').any(|part| part == "." || part == "..") {
        return Some("must be a normalized path (no `.`, `..` or `//`)".into());
    }
    if path.chars().any(char::is_control) {
        return Some("contains a control character".into());
    }
    None
}

/// Whether `path` is `dir` or inside it, comparing components.
pub fn path_within(path: &str, dir: &str) -> bool {
    std::path::Path::new(path).starts_with(std::path::Path::new(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_that_run_programs_are_named() {
        for bad in [
            "qemu+ext:///system?command=/path/x",
            "qemu+ssh://h/system?command=/path/x",
            "qemu+ssh://h/system?netcat=/tmp/nc",
            "qemu+libssh2://h/system?socket=/x;id",
            "qemu+ssh://h/system?keyfile=/k&PROXY=netcat",
            "qemu:///system?command=/x",
        ] {
            assert!(uri_runs_a_program(bad).is_some(), "{bad}");
        }
        for good in [
            "qemu:///system",
            "qemu+ssh://github@node/system?keyfile=/root/.ssh/id&no_tty=1",
            "qemu+unix:///system?socket=/run/libvirt/libvirt-sock",
            "qemu+tls://node/system",
            "test:///default",
            "sandbox",
        ] {
            assert_eq!(uri_runs_a_program(good), None, "{good}");
        }
    }

    #[test]
    fn credentials_in_urls_are_named() {
        assert!(url_has_credentials("http://user:PASSWORD@127.0.0.1:1/").is_some());
        assert!(url_has_credentials("https://tok@api.example").is_some());
        assert_eq!(url_has_credentials("https://api.github.com"), None);
        assert_eq!(url_has_credentials("qemu+ssh://github@node/system"), None);
    }

    #[test]
    fn guest_paths_are_plain() {
        assert_eq!(guest_path("/var/cache/hangar"), None);
        for bad in [
            "/var/cache hangar",
            "/var/cache\nx",
            "/a/../etc",
            "relative",
            "/a\tb",
            "/a#b",
            "/a$b",
        ] {
            assert!(guest_path(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn host_paths_are_normalized_and_compared_by_component() {
        assert_eq!(host_path("/var/lib/images/u.qcow2"), None);
        assert!(host_path("/var/lib/images/../../etc/shadow").is_some());
        assert!(path_within("/var/lib/images/u.qcow2", "/var/lib/images"));
        assert!(!path_within("/var/lib/images2/u.qcow2", "/var/lib/images"));
    }
}
