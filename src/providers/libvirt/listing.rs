//! Every domain of a host with its name, UUID and state in one RPC
//! (`virConnectGetAllDomainStats(STATE)`): what observation costs in steady
//! state.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

use crate::plan::model::VmState;

/// One domain of the listing.
pub(super) struct Listed {
    pub dom: Domain,
    pub name: String,
    pub uuid: String,
    pub state: VmState,
}

fn vm_state(raw: c_int) -> VmState {
    match raw as sys::virDomainState {
        sys::VIR_DOMAIN_RUNNING => VmState::Running,
        sys::VIR_DOMAIN_PAUSED => VmState::Paused,
        sys::VIR_DOMAIN_SHUTOFF => VmState::ShutOff,
        sys::VIR_DOMAIN_CRASHED => VmState::Crashed,
        _ => VmState::Other,
    }
}

/// Every domain with its state, in one `virConnectGetAllDomainStats` RPC.
/// virt 0.5's `all_domain_stats` leaks its records and exposes no fields, so
/// this calls the C API and frees the list itself.
pub(super) fn list_domains(conn: &Connect) -> Result<Vec<Listed>, virt::error::Error> {
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `conn` is a live connection; libvirt allocates `records`, a
    // NULL-terminated array we free below with the matching libvirt call.
    let n = unsafe {
        sys::virConnectGetAllDomainStats(
            conn.as_ptr(),
            sys::VIR_DOMAIN_STATS_STATE,
            &mut records,
            0,
        )
    };
    if n < 0 {
        return Err(virt::error::Error::last_error());
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: `i < n` entries are valid records owned by the list; the
        // name pointer lives as long as the domain object, and we take our
        // own reference on the domain before the list is freed.
        unsafe {
            let rec = *records.add(i);
            let dom_ptr = (*rec).dom;
            let name = CStr::from_ptr(sys::virDomainGetName(dom_ptr))
                .to_string_lossy()
                .into_owned();
            let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
            let uuid = if sys::virDomainGetUUIDString(dom_ptr, buf.as_mut_ptr()) == 0 {
                CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
            } else {
                String::new()
            };
            let mut state: c_int = sys::VIR_DOMAIN_NOSTATE as c_int;
            sys::virTypedParamsGetInt(
                (*rec).params,
                (*rec).nparams,
                c"state.state".as_ptr(),
                &mut state,
            );
            sys::virDomainRef(dom_ptr);
            out.push(Listed {
                dom: Domain::from_ptr(dom_ptr),
                name,
                uuid,
                state: vm_state(state),
            });
        }
    }
    // SAFETY: the array came from virConnectGetAllDomainStats.
    unsafe { sys::virDomainStatsRecordListFree(records) };
    Ok(out)
}
