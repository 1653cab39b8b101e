//! The one reading of libvirt's error numbers: worth retrying, gone, or
//! refused. Every libvirt failure of the provider (domains, volumes, pools,
//! networks, filters) goes through [`kind_of`].

use virt::error::ErrorNumber;

use crate::providers::{ErrorKind, ProviderError};

/// What an error number means for the caller.
///
/// - Transient: the connection or the daemon failed, or an operation ran
///   into a passing state (a timeout, a busy resource, an aborted job, a
///   guest agent not answering yet). A retry after a backoff may succeed;
///   the connection wrapper also drops the connection on these, so the
///   retry reopens it.
/// - Not found: the object named does not exist (any more). Deleting it is
///   done; looking it up answers `None`.
/// - Refused, everything else: a bad request, an unsupported feature, a
///   name taken, a failed command. Retrying the same call gives the same
///   answer. Numbers newer than the virt crate are refused too.
///
/// Decisions worth a word: `SystemError` (a failed system call) is
/// transient because a dropped or refused socket is reported as one,
/// unless its message ends in a condition of the host that lasts until
/// someone acts ([`LASTING`]: a read-only or full file system, a denied
/// permission), which is refused so that `apply` says it at once instead
/// of retrying until `--wait` ends;
/// `NoServer`/`NoClient` are the admin API's "no such server/client", not
/// an unreachable server, so they are refused; `InternalError` is refused
/// (it is what a qemu that would not start reports).
pub fn classify(code: ErrorNumber) -> ErrorKind {
    use ErrorNumber::*;
    match code {
        SystemError | Rpc | NoConnect | InvalidConn | OperationTimeout | OperationAborted
        | ResourceBusy | AgentUnresponsive | AgentUnsynced | AgentCommandTimeout => {
            ErrorKind::Transient
        }
        NoDomain | NoStorageVolume | NoStoragePool | NoNetwork | NoNwfilter | NoDomainMetadata
        | NoDomainSnapshot | NoNodeDevice | NoSecret | NoNetworkPort | NoNwfilterBinding => {
            ErrorKind::NotFound
        }
        _ => ErrorKind::Refused,
    }
}

/// The system errors (as `strerror` words them, at the end of libvirt's
/// message) that no retry fixes: the pool's file system is read-only or
/// full, or the daemon may not write there.
pub const LASTING: &[&str] = &[
    "Read-only file system",
    "No space left on device",
    "Disk quota exceeded",
    "Permission denied",
    "Operation not permitted",
];

/// [`classify`] for a `SystemError` with its message.
pub fn classify_system(message: &str) -> ErrorKind {
    if LASTING.iter().any(|t| message.trim_end().ends_with(t)) {
        ErrorKind::Refused
    } else {
        ErrorKind::Transient
    }
}

/// [`classify`] for an error as the virt crate returns it.
pub fn kind_of(e: &virt::error::Error) -> ErrorKind {
    match e.code() {
        virt::enumutil::Enum::Known(ErrorNumber::SystemError) => classify_system(e.message()),
        virt::enumutil::Enum::Known(code) => classify(code),
        virt::enumutil::Enum::Unknown(_) => ErrorKind::Refused,
    }
}

/// A libvirt failure of `what` on `host`, classified.
pub fn map_error(host: &str, what: &str, e: &virt::error::Error) -> ProviderError {
    ProviderError::new(host, kind_of(e), format!("{what}: {}", e.message()))
}

/// `NotFound` as `None`.
pub fn optional<T>(r: Result<T, ProviderError>) -> Result<Option<T>, ProviderError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorNumber::*;

    #[test]
    fn each_error_number_has_one_meaning() {
        let table = [
            // The connection or the daemon.
            (SystemError, ErrorKind::Transient),
            (Rpc, ErrorKind::Transient),
            (NoConnect, ErrorKind::Transient),
            (InvalidConn, ErrorKind::Transient),
            // Passing states.
            (OperationTimeout, ErrorKind::Transient),
            (OperationAborted, ErrorKind::Transient),
            (ResourceBusy, ErrorKind::Transient),
            (AgentUnresponsive, ErrorKind::Transient),
            (AgentUnsynced, ErrorKind::Transient),
            (AgentCommandTimeout, ErrorKind::Transient),
            // Gone.
            (NoDomain, ErrorKind::NotFound),
            (NoStorageVolume, ErrorKind::NotFound),
            (NoStoragePool, ErrorKind::NotFound),
            (NoNetwork, ErrorKind::NotFound),
            (NoNwfilter, ErrorKind::NotFound),
            (NoDomainMetadata, ErrorKind::NotFound),
            (NoDomainSnapshot, ErrorKind::NotFound),
            (NoNodeDevice, ErrorKind::NotFound),
            (NoSecret, ErrorKind::NotFound),
            (NoNetworkPort, ErrorKind::NotFound),
            (NoNwfilterBinding, ErrorKind::NotFound),
            // Refused: the same call gets the same answer.
            (NoServer, ErrorKind::Refused),
            (NoClient, ErrorKind::Refused),
            (InternalError, ErrorKind::Refused),
            (OperationFailed, ErrorKind::Refused),
            (OperationInvalid, ErrorKind::Refused),
            (OperationDenied, ErrorKind::Refused),
            (AccessDenied, ErrorKind::Refused),
            (AuthFailed, ErrorKind::Refused),
            (XmlError, ErrorKind::Refused),
            (XmlDetail, ErrorKind::Refused),
            (NoSupport, ErrorKind::Refused),
            (ConfigUnsupported, ErrorKind::Refused),
            (DomExist, ErrorKind::Refused),
            (StorageVolExist, ErrorKind::Refused),
            (NetworkExist, ErrorKind::Refused),
            (NoNetworkStart, ErrorKind::Refused),
            (BuildFirewall, ErrorKind::Refused),
            (CpuIncompatible, ErrorKind::Refused),
            (InvalidArg, ErrorKind::Refused),
        ];
        for (code, kind) in table {
            assert_eq!(classify(code), kind, "{code:?}");
        }
    }

    /// Messages as libvirt 9 words them (the first as the real daemon here
    /// answers a volume create in a pool on a read-only mount).
    #[test]
    fn a_system_error_is_refused_only_for_a_lasting_condition() {
        let table = [
            (
                "Failed to create file '/p/v1': Read-only file system",
                ErrorKind::Refused,
            ),
            (
                "Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory",
                ErrorKind::Transient,
            ),
            ("cannot write to '/p/v.partial': No space left on device", ErrorKind::Refused),
            ("Cannot write data: Broken pipe", ErrorKind::Transient),
            ("Cannot recv data: Connection reset by peer", ErrorKind::Transient),
            (
                "Failed to connect socket to '/var/run/libvirt/libvirt-sock': Permission denied",
                ErrorKind::Refused,
            ),
            // Only the condition at the end counts, not a word inside.
            ("Permission denied by nobody: Connection refused", ErrorKind::Transient),
        ];
        for (message, kind) in table {
            assert_eq!(classify_system(message), kind, "{message}");
        }
    }
}
