//! `hangar logs` and `hangar console` through the binary on the sandbox,
//! whose guests write their console markers into logs named as real ones
//! are. The real-libvirtd side is tests/console_system.rs.

#[path = "support/bin.rs"]
mod bin;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bin::*;

#[test]
fn logs_show_the_newest_generation_and_follow_a_replacement() {
    let sb = Sandbox::new();
    let file = sb.edited("fleet.yaml", |t| t);
    let f = file.to_str().unwrap();
    let r = sb.run(&["apply", "-f", f, "--wait", "2m"]);
    assert_eq!(r.code, 0, "{r}");
    let slot = "quickstart-build-0";

    let r = sb.run(&["logs", slot, "-f", f]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout
            .contains(&format!("hangar: runner started {slot} ")),
        "{r}"
    );
    let r = sb.run(&["logs", "quickstart-build-9", "-f", f]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains(
            "no slot quickstart-build-9 in fleet quickstart; slots: quickstart-build-0, \
             quickstart-build-1, quickstart-pr-0, quickstart-pr-1"
        ),
        "{r}"
    );
    let r = sb.run(&["logs", slot, "-f", f, "--generation", "2"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("no console log of generation 2"), "{r}");
    let r = sb.run(&["console", slot, "-f", f]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("no serial console"), "{r}");

    // Following, then the slot's VM is replaced (more memory): the new
    // generation's log follows the old one's.
    let mut follow = sb
        .command(&["logs", slot, "-f", f, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let mut stderr = follow.stderr.take().unwrap();
    let edited = sb.edited("fleet.yaml", |t| {
        t.replacen("memory: 512MiB", "memory: 768MiB", 1)
    });
    let r = sb.run(&["apply", "-f", edited.to_str().unwrap(), "--wait", "2m"]);
    assert_eq!(r.code, 0, "{r}");
    let until = Instant::now() + Duration::from_secs(20);
    let gen2 = sb
        .state
        .path()
        .join("sandbox/console/sandbox-1")
        .join(format!("{slot}-g2.console.log"));
    while !std::fs::read_to_string(&gen2)
        .map(|t| t.contains("runner started"))
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < until,
            "no generation 2 log at {}",
            gen2.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Time for one more poll of the follower, then stop it.
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(follow.id() as i32, libc::SIGTERM) };
    let status = follow.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let (mut out, mut err) = (String::new(), String::new());
    stdout.read_to_string(&mut out).unwrap();
    stderr.read_to_string(&mut err).unwrap();
    assert_eq!(
        out.matches(&format!("hangar: runner started {slot} "))
            .count(),
        2,
        "both generations' logs, once each:\n{out}"
    );
    assert!(err.contains(&format!("--- {slot} generation 2: ")), "{err}");
}
