//! One wrapper that lets a [`Hook`] stand around every call made of a
//! [`Hypervisor`]: for counting calls, for delaying them, for injecting
//! failures before or after the real call.
//!
//! The engine's tests, the reliability suite and the bench each used to
//! write a whole `Hypervisor` that forwarded every method; they now write a
//! `Hook` of a few lines, and a method added to the trait is forwarded here
//! once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use super::{CacheUsage, Hypervisor, ProviderError, VmCreate};
use crate::model::runner::LocalTarball;
use crate::model::HostFacts;
use crate::plan::model::{DrainState, Leftover, ObservedHost, ObservedVm, VmRef};

/// Which call, without its arguments: for counting and matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HvOp {
    Facts,
    Observe,
    Create,
    Start,
    Delete,
    RemoveSeed,
    Drain,
    CacheUsage,
    EnsureNetwork,
    RemoveNetwork,
    RemoveLeftover,
    EnsureRunnerVolume,
}

impl HvOp {
    pub const ALL: [HvOp; 12] = [
        HvOp::Facts,
        HvOp::Observe,
        HvOp::Create,
        HvOp::Start,
        HvOp::Delete,
        HvOp::RemoveSeed,
        HvOp::Drain,
        HvOp::CacheUsage,
        HvOp::EnsureNetwork,
        HvOp::RemoveNetwork,
        HvOp::RemoveLeftover,
        HvOp::EnsureRunnerVolume,
    ];

    /// Whether the call changes the world (a read only looks).
    pub fn mutating(self) -> bool {
        !matches!(self, HvOp::Facts | HvOp::Observe | HvOp::CacheUsage)
    }
}

/// A call with the arguments a hook may want to look at.
#[derive(Debug, Clone, Copy)]
pub enum HvCall<'a> {
    Facts,
    Observe {
        fleet: &'a str,
    },
    Create(&'a VmCreate),
    Start(&'a VmRef),
    Delete {
        vm: &'a VmRef,
        remove_cache: bool,
    },
    RemoveSeed(&'a VmRef),
    Drain(&'a VmRef),
    CacheUsage {
        fleet: &'a str,
    },
    EnsureNetwork {
        network: &'a str,
        filter: &'a str,
    },
    RemoveNetwork {
        network: &'a str,
        filter: &'a str,
    },
    RemoveLeftover(&'a Leftover),
    EnsureRunnerVolume {
        volume: &'a str,
        local: &'a LocalTarball,
    },
}

impl HvCall<'_> {
    pub fn op(&self) -> HvOp {
        match self {
            HvCall::Facts => HvOp::Facts,
            HvCall::Observe { .. } => HvOp::Observe,
            HvCall::Create(_) => HvOp::Create,
            HvCall::Start(_) => HvOp::Start,
            HvCall::Delete { .. } => HvOp::Delete,
            HvCall::RemoveSeed(_) => HvOp::RemoveSeed,
            HvCall::Drain(_) => HvOp::Drain,
            HvCall::CacheUsage { .. } => HvOp::CacheUsage,
            HvCall::EnsureNetwork { .. } => HvOp::EnsureNetwork,
            HvCall::RemoveNetwork { .. } => HvOp::RemoveNetwork,
            HvCall::RemoveLeftover(_) => HvOp::RemoveLeftover,
            HvCall::EnsureRunnerVolume { .. } => HvOp::EnsureRunnerVolume,
        }
    }

    /// The VM the call is about, with its generation.
    pub fn vm(&self) -> Option<(&str, u64)> {
        match self {
            HvCall::Create(vm) => Some((&vm.owner.slot, vm.owner.generation)),
            HvCall::Start(vm)
            | HvCall::RemoveSeed(vm)
            | HvCall::Drain(vm)
            | HvCall::Delete { vm, .. } => Some((&vm.name, vm.generation)),
            _ => None,
        }
    }
}

/// A call on its way to the hypervisor: awaiting it makes it.
pub type Made<'a, T> = Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// What a [`Hooked`] hypervisor does around each call: look at it, delay
/// it, refuse it (return an error without awaiting `made`), or make it and
/// report another outcome.
pub trait Hook: Send + Sync {
    fn around<'a, T: Send + 'a>(
        &'a self,
        host: &'a str,
        call: HvCall<'a>,
        made: Made<'a, T>,
    ) -> Made<'a, T>;
}

/// `inner` with `hook` around every call.
pub struct Hooked<H: ?Sized, K> {
    pub hook: K,
    pub inner: Arc<H>,
}

impl<H: Hypervisor + ?Sized, K: Hook> Hooked<H, K> {
    pub fn new(inner: Arc<H>, hook: K) -> Self {
        Hooked { hook, inner }
    }

    async fn around<'a, T: Send + 'a>(
        &'a self,
        call: HvCall<'a>,
        made: Made<'a, T>,
    ) -> Result<T, ProviderError> {
        self.hook.around(self.inner.host(), call, made).await
    }
}

#[async_trait]
impl<H: Hypervisor + ?Sized, K: Hook> Hypervisor for Hooked<H, K> {
    fn host(&self) -> &str {
        self.inner.host()
    }

    fn simulated(&self) -> bool {
        self.inner.simulated()
    }

    async fn facts(&self) -> Result<HostFacts, ProviderError> {
        self.around(HvCall::Facts, self.inner.facts()).await
    }

    async fn observe(&self, fleet: &str) -> Result<Vec<ObservedVm>, ProviderError> {
        self.around(HvCall::Observe { fleet }, self.inner.observe(fleet))
            .await
    }

    fn foreign_names(&self) -> Vec<String> {
        self.inner.foreign_names()
    }

    async fn create(&self, vm: &VmCreate) -> Result<(), ProviderError> {
        self.around(HvCall::Create(vm), self.inner.create(vm)).await
    }

    async fn start(&self, vm: &VmRef) -> Result<(), ProviderError> {
        self.around(HvCall::Start(vm), self.inner.start(vm)).await
    }

    async fn delete(&self, vm: &VmRef, remove_cache: bool) -> Result<(), ProviderError> {
        self.around(
            HvCall::Delete { vm, remove_cache },
            self.inner.delete(vm, remove_cache),
        )
        .await
    }

    async fn remove_seed(&self, vm: &VmRef) -> Result<(), ProviderError> {
        self.around(HvCall::RemoveSeed(vm), self.inner.remove_seed(vm))
            .await
    }

    async fn drain(&self, vm: &VmRef) -> Result<DrainState, ProviderError> {
        self.around(HvCall::Drain(vm), self.inner.drain(vm)).await
    }

    async fn cache_usage(&self, fleet: &str) -> Result<Vec<CacheUsage>, ProviderError> {
        self.around(HvCall::CacheUsage { fleet }, self.inner.cache_usage(fleet))
            .await
    }

    fn host_state(&self) -> ObservedHost {
        self.inner.host_state()
    }

    async fn ensure_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        self.around(
            HvCall::EnsureNetwork { network, filter },
            self.inner.ensure_network(network, filter),
        )
        .await
    }

    async fn remove_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        self.around(
            HvCall::RemoveNetwork { network, filter },
            self.inner.remove_network(network, filter),
        )
        .await
    }

    async fn remove_leftover(&self, leftover: &Leftover) -> Result<(), ProviderError> {
        self.around(
            HvCall::RemoveLeftover(leftover),
            self.inner.remove_leftover(leftover),
        )
        .await
    }

    async fn ensure_runner_volume(
        &self,
        volume: &str,
        local: &LocalTarball,
    ) -> Result<(), ProviderError> {
        self.around(
            HvCall::EnsureRunnerVolume { volume, local },
            self.inner.ensure_runner_volume(volume, local),
        )
        .await
    }
}
