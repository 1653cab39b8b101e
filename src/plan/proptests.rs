//! Properties of the planner over random worlds: a plan, once applied,
//! leaves nothing to do; no plan harms a busy runner, touches what is not
//! ours, or destroys where the observation failed; the order of the inputs
//! does not matter.
//!
//! Time stands still in these worlds (`now` is fixed): whatever waits on a
//! clock keeps waiting, and the simulator below makes every created VM come
//! up, so a second plan must find nothing new to do except remove the seeds
//! of VMs the first plan brought up.

use std::collections::{BTreeMap, BTreeSet};

use chrono::TimeDelta;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::model::*;
use super::planner::is_busy;
use super::tests::{now, shape, slot, FLEET, MIN};
use super::{destroy, plan};
use crate::model::*;

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
const POOLS: [&str; 3] = ["umn", "gpu", "old"];

#[derive(Debug, Clone)]
struct RawVm {
    host: usize,
    pool: usize,
    index: u32,
    foreign_fleet: bool,
    generation: u64,
    state: VmState,
    guest: Option<GuestStage>,
    seed_attached: bool,
    age_min: i64,
    boot_failures: u32,
    new_spec: bool,
    ephemeral: bool,
}

#[derive(Debug, Clone)]
struct RawRunner {
    pool: usize,
    index: u32,
    labelled: bool,
    online: bool,
    busy: bool,
    offline_min: Option<i64>,
}

fn vm_state() -> impl Strategy<Value = VmState> {
    prop_oneof![
        4 => Just(VmState::Running),
        2 => Just(VmState::ShutOff),
        1 => Just(VmState::Crashed),
        1 => Just(VmState::Paused),
        1 => Just(VmState::Other),
    ]
}

fn guest() -> impl Strategy<Value = Option<GuestStage>> {
    prop_oneof![
        Just(None),
        Just(Some(GuestStage::Booting)),
        Just(Some(GuestStage::DockerReady)),
        Just(Some(GuestStage::RunnerStarted)),
        Just(Some(GuestStage::JobStarted)),
        Just(Some(GuestStage::JobFinished)),
        Just(Some(GuestStage::Failed)),
    ]
}

fn raw_vm() -> impl Strategy<Value = RawVm> {
    (
        (0..3usize, 0..3usize, 0..4u32, prop::bool::weighted(0.1)),
        (1..4u64, vm_state(), guest(), any::<bool>()),
        (0..120i64, 0..4u32, prop::bool::weighted(0.2), any::<bool>()),
    )
        .prop_map(|(a, b, c)| RawVm {
            host: a.0,
            pool: a.1,
            index: a.2,
            foreign_fleet: a.3,
            generation: b.0,
            state: b.1,
            guest: b.2,
            seed_attached: b.3,
            age_min: c.0,
            boot_failures: c.1,
            new_spec: c.2,
            ephemeral: c.3,
        })
}

fn raw_runner() -> impl Strategy<Value = RawRunner> {
    (
        0..3usize,
        0..5u32,
        prop::bool::weighted(0.85),
        any::<bool>(),
        prop::bool::weighted(0.25),
        prop::option::of(0..30i64),
    )
        .prop_map(
            |(pool, index, labelled, online, busy, offline_min)| RawRunner {
                pool,
                index,
                labelled,
                online,
                busy,
                offline_min,
            },
        )
}

/// Desired: per pool (umn, gpu) a count and a host; `old` is never desired.
fn world() -> impl Strategy<Value = (Desired, Observed)> {
    (
        proptest::array::uniform2((0..4u32, 0..3usize, any::<bool>())),
        prop::collection::vec(raw_vm(), 0..10),
        prop::collection::vec(raw_runner(), 0..8),
        proptest::array::uniform3(prop::bool::weighted(0.15)),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(pools, vms, runners, host_failed, github_failed)| {
            build(&pools, &vms, &runners, host_failed, github_failed)
        })
}

fn build(
    pools: &[(u32, usize, bool); 2],
    vms: &[RawVm],
    runners: &[RawRunner],
    host_failed: [bool; 3],
    github_failed: bool,
) -> (Desired, Observed) {
    let mut slots = Vec::new();
    for (p, &(count, host, ephemeral)) in pools.iter().enumerate() {
        for index in 0..count {
            // Spread a pool over hosts so that some slots sit elsewhere
            // than the random VMs of the same name (moves).
            let mut s = slot(POOLS[p], index, HOSTS[(host + index as usize) % 3]);
            s.ephemeral = ephemeral;
            slots.push(s);
        }
    }
    slots.sort_by(|a, b| a.name.cmp(&b.name));
    let desired = Desired {
        fleet: FLEET.into(),
        hosts: HOSTS.iter().map(|h| h.to_string()).collect(),
        pools: POOLS[..2].iter().map(|p| p.to_string()).collect(),
        slots,
        policy: Policy::default(),
        runners: Vec::new(),
        scale: Vec::new(),
        no_room: Vec::new(),
        capacity: Default::default(),
    };

    let mut hosts: BTreeMap<String, Vec<ObservedVm>> =
        HOSTS.iter().map(|h| (h.to_string(), Vec::new())).collect();
    for (i, raw) in vms.iter().enumerate() {
        let fleet = if raw.foreign_fleet { "other" } else { FLEET };
        let name = slot_name(fleet, POOLS[raw.pool], raw.index);
        let mut vm_shape = shape();
        if raw.new_spec {
            vm_shape.cpus = 4;
        }
        let vm = ObservedVm {
            name: name.clone(),
            uuid: format!("uuid-{i}"),
            host: HOSTS[raw.host].into(),
            state: raw.state,
            owner: Ownership {
                fleet: fleet.into(),
                pool: POOLS[raw.pool].into(),
                slot: name,
                index: raw.index,
                generation: raw.generation,
                spec_hash: SpecHash(if raw.new_spec { "s0" } else { "s1" }.into()),
                created_at: now() - TimeDelta::seconds(raw.age_min * MIN),
                ephemeral: raw.ephemeral,
                boot_failures: raw.boot_failures,
                shape: vm_shape,
            },
            guest: raw.guest,
            guest_since: None,
            seed_attached: raw.seed_attached,
            drain: None,
        };
        hosts.get_mut(HOSTS[raw.host]).unwrap().push(vm);
    }
    let hosts = hosts
        .into_iter()
        .enumerate()
        .map(|(i, (h, items))| {
            let o = if host_failed[i] {
                Observation::Failed {
                    error: Failure::new(ErrorKind::Transient, "down"),
                }
            } else {
                Observation::Seen { items }
            };
            (h, o)
        })
        .collect();

    let mut seen = BTreeSet::new();
    let mut items = Vec::new();
    for (i, raw) in runners.iter().enumerate() {
        let name = slot_name(FLEET, POOLS[raw.pool], raw.index);
        // GitHub keeps runner names unique within a scope.
        if !seen.insert(name.clone()) {
            continue;
        }
        let mut labels = vec!["UMN".to_string()];
        if raw.labelled {
            labels.push(ownership_label(FLEET));
        }
        items.push(ObservedRunner {
            id: 100 + i as u64,
            name,
            status: if raw.online {
                RunnerStatus::Online
            } else {
                RunnerStatus::Offline
            },
            busy: raw.busy,
            labels,
            offline_since: raw
                .offline_min
                .filter(|_| !raw.online)
                .map(|m| now() - TimeDelta::seconds(m * MIN)),
        });
    }
    let runners = if github_failed {
        Observation::Failed {
            error: Failure::new(ErrorKind::Transient, "502"),
        }
    } else {
        Observation::Seen { items }
    };
    (
        desired,
        Observed {
            hosts,
            runners,
            foreign_names: Default::default(),
            host_state: Default::default(),
        },
    )
}

/// The world after the engine ran `plan`'s mutating actions successfully,
/// with every new VM's runner coming up (online, idle, seed still attached).
fn apply(desired: &Desired, observed: &Observed, plan: &Plan) -> Observed {
    let mut world = observed.clone();
    let mut next_id = 10_000;
    let mut new_runner = |world: &mut Observed, name: &str| {
        if let Observation::Seen { items } = &mut world.runners {
            items.retain(|r| r.name != name);
            next_id += 1;
            items.push(ObservedRunner {
                id: next_id,
                name: name.into(),
                status: RunnerStatus::Online,
                busy: false,
                labels: vec!["UMN".into(), ownership_label(FLEET)],
                offline_since: None,
            });
        }
    };
    let remove_runner = |world: &mut Observed, runner: &Option<RunnerRef>| {
        if let (Some(r), Observation::Seen { items }) = (runner, &mut world.runners) {
            items.retain(|x| x.id != r.id);
        }
    };
    let fresh = |slot: &DesiredSlot, generation: u64, failures: u32, n: usize| ObservedVm {
        name: slot.name.clone(),
        uuid: format!("uuid-new-{n}"),
        host: slot.host.clone(),
        state: VmState::Running,
        owner: Ownership {
            fleet: FLEET.into(),
            pool: slot.pool.clone(),
            slot: slot.name.clone(),
            index: slot.index,
            generation,
            spec_hash: slot.spec_hash.clone(),
            created_at: now(),
            ephemeral: slot.ephemeral,
            boot_failures: failures,
            shape: slot.vm.clone(),
        },
        guest: Some(GuestStage::RunnerStarted),
        guest_since: None,
        seed_attached: true,
        drain: None,
    };
    for (n, action) in plan.actions.iter().enumerate() {
        match action {
            Action::Create {
                slot,
                generation,
                boot_failures,
                ..
            } => {
                assert!(
                    desired.slot(&slot.name).is_some(),
                    "creates are for desired slots"
                );
                vms_on(&mut world, &slot.host).push(fresh(slot, *generation, *boot_failures, n));
                new_runner(&mut world, &slot.name);
            }
            Action::Replace {
                vm,
                runner,
                next_generation,
                boot_failures,
                ..
            } => {
                let slot = desired
                    .slot(&vm.name)
                    .expect("replaces are for desired slots");
                vms_on(&mut world, &vm.host).retain(|v| v.uuid != vm.uuid);
                remove_runner(&mut world, runner);
                vms_on(&mut world, &vm.host).push(fresh(slot, *next_generation, *boot_failures, n));
                new_runner(&mut world, &slot.name);
            }
            Action::Delete { vm, runner, .. } => {
                vms_on(&mut world, &vm.host).retain(|v| v.uuid != vm.uuid);
                remove_runner(&mut world, runner);
            }
            Action::RemoveRunner { runner, .. } => remove_runner(&mut world, &Some(runner.clone())),
            Action::EnsureRunnerVolume { host, runner } => {
                if let Some(s) = world.host_state.get_mut(host) {
                    s.runner_volumes.push(runner.volume.clone());
                }
            }
            Action::EnsureNetwork { host, .. } | Action::RemoveNetwork { host, .. } => {
                let present = matches!(action, Action::EnsureNetwork { .. });
                if let Some(n) = world
                    .host_state
                    .get_mut(host)
                    .and_then(|s| s.network.as_mut())
                {
                    n.present = present;
                }
            }
            Action::RemoveLeftover { host, leftover } => {
                if let Some(s) = world.host_state.get_mut(host) {
                    s.leftovers.retain(|l| l != leftover);
                }
            }
            Action::Start { vm } => {
                let started = vms_on(&mut world, &vm.host)
                    .iter_mut()
                    .find(|v| v.uuid == vm.uuid)
                    .expect("start of an observed VM");
                started.state = VmState::Running;
                // A rebooted guest starts its runner service again.
                started.guest = Some(GuestStage::RunnerStarted);
                if let Observation::Seen { items } = &mut world.runners {
                    match items.iter_mut().find(|r| r.name == vm.name) {
                        Some(r) => {
                            r.status = RunnerStatus::Online;
                            r.offline_since = None;
                        }
                        None => new_runner(&mut world, &vm.name),
                    }
                }
            }
            Action::RemoveSeed { vm } => {
                for v in vms_on(&mut world, &vm.host) {
                    if v.uuid == vm.uuid {
                        v.seed_attached = false;
                    }
                }
            }
            Action::Drain { vm, .. } => {
                for v in vms_on(&mut world, &vm.host) {
                    if v.uuid == vm.uuid {
                        v.drain = Some(crate::plan::model::DrainState::Delivered);
                    }
                }
            }
            Action::Wait { .. } => {}
        }
    }
    world
}

fn vms_on<'a>(world: &'a mut Observed, host: &str) -> &'a mut Vec<ObservedVm> {
    match world.hosts.get_mut(host) {
        Some(Observation::Seen { items }) => items,
        _ => panic!("an action reached host {host}, whose observation failed"),
    }
}

fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        ..Config::default()
    }
}

/// A fixed seed: CI runs the same 256 worlds every time.
fn runner_for(seed: u8) -> TestRunner {
    TestRunner::new_with_rng(
        config(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

#[test]
fn applying_a_plan_leaves_only_seed_removals_then_nothing() {
    runner_for(1)
        .run(&world(), |(desired, observed)| {
            let first = plan(&desired, &observed, now());
            let after = apply(&desired, &observed, &first);
            let second = plan(&desired, &after, now());
            let touched: BTreeSet<&str> = first.mutating().map(Action::subject).collect();
            for action in second.mutating() {
                prop_assert!(
                    matches!(action, Action::RemoveSeed { .. })
                        && touched.contains(action.subject()),
                    "left to do after applying {first:#?}: {action:#?}"
                );
            }
            let settled = apply(&desired, &after, &second);
            let third = plan(&desired, &settled, now());
            prop_assert!(!third.has_changes(), "not converged: {third:#?}");
            Ok(())
        })
        .unwrap();
}

#[test]
fn no_plan_harms_a_busy_runner_or_anything_not_ours_or_unobserved() {
    runner_for(2)
        .run(&world(), |(desired, observed)| {
            check_safety(&observed, &plan(&desired, &observed, now()), false)?;
            check_safety(&observed, &destroy(FLEET, &[], &observed, false), false)?;
            check_safety(&observed, &destroy(FLEET, &[], &observed, true), true)
        })
        .unwrap();
}

fn check_safety(observed: &Observed, plan: &Plan, forced: bool) -> Result<(), TestCaseError> {
    let vms: BTreeMap<&str, &ObservedVm> = observed
        .hosts
        .values()
        .filter_map(Observation::seen)
        .flatten()
        .map(|vm| (vm.uuid.as_str(), vm))
        .collect();
    let runners = observed.runners.seen();
    let owned_runner = |name: &str| {
        runners
            .into_iter()
            .flatten()
            .find(|r| r.name == name && r.is_owned_by(FLEET))
    };
    let failed_host =
        |host: &str| !matches!(observed.hosts.get(host), Some(Observation::Seen { .. }));
    for action in &plan.actions {
        if let Some(host) = action.host() {
            prop_assert!(!failed_host(host), "acts on unobserved {host}: {action:?}");
        }
        if runners.is_none() {
            prop_assert!(
                !action.is_destructive() && !matches!(action, Action::RemoveSeed { .. }),
                "destructive without GitHub's list: {action:?}"
            );
        }
        match action {
            Action::Replace { vm, runner, .. } | Action::Delete { vm, runner, .. } => {
                let seen = vms.get(vm.uuid.as_str()).expect("acts on an observed VM");
                prop_assert_eq!(&seen.owner.fleet, FLEET);
                prop_assert!(
                    forced || !is_busy(seen, owned_runner(&vm.name)),
                    "busy VM removed: {:?}",
                    action
                );
                if let Some(r) = runner {
                    let r = owned_runner(&r.name).filter(|x| x.id == r.id);
                    prop_assert!(r.is_some(), "runner not ours: {:?}", action);
                }
            }
            Action::Start { vm } | Action::RemoveSeed { vm } => {
                let seen = vms.get(vm.uuid.as_str()).expect("acts on an observed VM");
                prop_assert_eq!(&seen.owner.fleet, FLEET);
            }
            Action::Drain { vm, .. } => {
                let seen = vms.get(vm.uuid.as_str()).expect("acts on an observed VM");
                prop_assert_eq!(&seen.owner.fleet, FLEET);
                prop_assert!(
                    !seen.owner.ephemeral && is_busy(seen, owned_runner(&vm.name)),
                    "drain of an idle or ephemeral runner: {:?}",
                    action
                );
            }
            Action::RemoveRunner { runner, .. } => {
                let r = owned_runner(&runner.name).filter(|x| x.id == runner.id);
                prop_assert!(r.is_some_and(|r| forced || !r.busy), "{:?}", action);
            }
            Action::Create { .. }
            | Action::Wait { .. }
            | Action::EnsureNetwork { .. }
            | Action::EnsureRunnerVolume { .. }
            | Action::RemoveNetwork { .. }
            | Action::RemoveLeftover { .. } => {}
        }
    }
    Ok(())
}

#[test]
fn the_same_world_in_any_order_gives_the_same_plan() {
    runner_for(3)
        .run(&(world(), any::<u64>()), |((desired, observed), seed)| {
            let mut shuffled_desired = desired.clone();
            let mut shuffled = observed.clone();
            let mut rng = seed | 1;
            shuffle(&mut shuffled_desired.slots, &mut rng);
            for o in shuffled.hosts.values_mut() {
                if let Observation::Seen { items } = o {
                    shuffle(items, &mut rng);
                }
            }
            if let Observation::Seen { items } = &mut shuffled.runners {
                shuffle(items, &mut rng);
            }
            prop_assert_eq!(
                plan(&desired, &observed, now()),
                plan(&shuffled_desired, &shuffled, now())
            );
            prop_assert_eq!(
                destroy(FLEET, &[], &observed, false),
                destroy(FLEET, &[], &shuffled, false)
            );
            Ok(())
        })
        .unwrap();
}

/// Fisher–Yates over xorshift: the permutation comes from proptest's seed.
fn shuffle<T>(items: &mut [T], state: &mut u64) {
    for i in (1..items.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        items.swap(i, (*state % (i as u64 + 1)) as usize);
    }
}
