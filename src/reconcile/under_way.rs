//! The actions this process has under way, for the one thing that needs
//! them outside the executor: a second stop signal exits at once, and says
//! what it left half done.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static UNDER_WAY: Mutex<BTreeMap<u64, String>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Registered while it lives.
pub struct UnderWay(u64);

/// `what` (an action's plan line) is under way until the guard drops.
pub fn begin(what: String) -> UnderWay {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    UNDER_WAY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(id, what);
    UnderWay(id)
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        UNDER_WAY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.0);
    }
}

/// What is under way now, in the order it started.
pub fn now() -> Vec<String> {
    UNDER_WAY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_is_under_way_while_its_guard_lives() {
        let a = begin("create t-p-0".into());
        let b = begin("delete t-p-1".into());
        let listed = now();
        assert!(listed.contains(&"create t-p-0".to_string()), "{listed:?}");
        drop(a);
        let listed = now();
        assert!(!listed.contains(&"create t-p-0".to_string()), "{listed:?}");
        assert!(listed.contains(&"delete t-p-1".to_string()), "{listed:?}");
        drop(b);
    }
}
