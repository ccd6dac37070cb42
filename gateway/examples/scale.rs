//! What a large configuration costs a gateway: heap bytes per API, application and
//! subscription, the time to compile the whole routing table, and the time to bring
//! it up to date after one change (as the syncer does: the fold's effects applied to
//! the current table).
//!
//! ```text
//! cargo run --release -p gatehouse-gateway --example scale -- 10000 10000 100000
//! ```
//!
//! Arguments: APIs, applications, subscriptions (spread round-robin: subscription `i`
//! is application `i % applications` to API `i / applications % apis`, so each pair
//! is unique while `subscriptions <= apis * applications`). Ids are 36-character
//! UUID-shaped strings, as control makes them. APIs are created with the real
//! commands (`gatehouse_domain::handle`); applications and subscriptions are folded as
//! the events those commands decide (deciding them one by one against a growing state
//! would measure the handlers, not the gateway).
//!
//! Heap bytes are counted by a global allocator wrapped around the system's (bytes
//! requested, live); RSS is the kernel's figure, allocator overhead included (and the
//! building of the state itself, so it is an upper bound). The domain state is measured
//! alone, then what the table adds beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use gatehouse_domain::{AggregateKind, Command, Consistency, PendingEvent, State};
use gatehouse_gateway::metrics::Metrics;
use gatehouse_gateway::table::RoutingTable;
use gatehouse_proto::events::{
    ApplicationCreated, SubscriptionCreated, event_envelope::Event, lifecycle,
};
use gatehouse_testkit::domain::{commit, run};
use gatehouse_testkit::world::{api, resources};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A UUID-shaped id (36 characters) for item `i` of `kind`.
fn uuid(kind: u8, i: usize) -> String {
    format!("{:08x}-{kind:04x}-4000-8000-{:012x}", i, i * 7919)
}

fn event(state: &State, kind: AggregateKind, id: String, event: Event) -> PendingEvent {
    PendingEvent::first(kind, id, Consistency::log(state), event)
}

fn apis(state: &mut State, count: usize) {
    let urls = ["http://127.0.0.1:8000".to_string()];
    for i in 0..count {
        let id = uuid(1, i);
        let paths = [
            ("GET", "/items"),
            ("GET", "/items/{id}"),
            ("POST", "/items"),
        ];
        let definition = api(
            &format!("Api{i}"),
            &format!("/api{i}"),
            "1.0.0",
            resources(&paths),
            &urls,
        );
        run(
            state,
            Command::CreateApi {
                api_id: id.clone(),
                definition,
            },
        );
        run(
            state,
            Command::ChangeLifecycle {
                api_id: id,
                target: lifecycle::State::Published,
                expected_version: None,
            },
        );
    }
}

fn applications(state: &mut State, count: usize) {
    for i in 0..count {
        let created = Event::ApplicationCreated(ApplicationCreated {
            name: format!("App{i}"),
            owner: format!("owner{}", i % 100),
            throttling_tier: "Unlimited".into(),
            description: String::new(),
        });
        let e = event(state, AggregateKind::Application, uuid(2, i), created);
        commit(state, vec![e]);
    }
}

fn subscriptions(state: &mut State, count: usize, apis: usize, applications: usize) {
    for i in 0..count {
        let created = Event::SubscriptionCreated(SubscriptionCreated {
            application_id: uuid(2, i % applications),
            api_id: uuid(1, i / applications % apis),
            tier: "Unlimited".into(),
        });
        let e = event(state, AggregateKind::Subscription, uuid(3, i), created);
        commit(state, vec![e]);
    }
}

fn per(bytes: usize, count: usize) -> String {
    if count == 0 {
        return "-".into();
    }
    format!("{:.0}", bytes as f64 / count as f64)
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().unwrap());
    let (n_apis, n_apps, n_subs) = (
        args.next().unwrap_or(1000),
        args.next().unwrap_or(1000),
        args.next().unwrap_or(10_000),
    );
    let metrics = Metrics::default();
    let base = live();
    let mut state = State::new();
    let empty = live();

    apis(&mut state, n_apis);
    let after_apis = live();
    applications(&mut state, n_apps);
    let after_apps = live();
    subscriptions(&mut state, n_subs, n_apis.max(1), n_apps.max(1));
    let after_subs = live();
    println!(
        "state: {:.1} MiB; per API {} B, per application {} B, per subscription {} B",
        (after_subs - base) as f64 / 1048576.0,
        per(after_apis - empty, n_apis),
        per(after_apps - after_apis, n_apps),
        per(after_subs - after_apps, n_subs),
    );

    // What the gateway holds beside its state: the table.
    let before_table = live();
    let started = Instant::now();
    let table = RoutingTable::build(&state, &metrics);
    let build = started.elapsed();
    let with_table = live();
    println!(
        "table: {:.1} MiB beside the state (built in {:.0} ms); gateway total {:.1} MiB, RSS {:.0} MiB",
        (with_table - before_table) as f64 / 1048576.0,
        build.as_secs_f64() * 1000.0,
        (with_table - base) as f64 / 1048576.0,
        rss_mib(),
    );

    // Changes brought into a new table as the syncer does: the fold records what each
    // batch touched, the current table is copied with those entries recompiled, and a
    // copy of the state goes to the disk writer (kept here, as the syncer's channel
    // keeps it).
    state.record_effects();
    let mut table = table;
    let mut disk_copy = state.clone();
    let mut times = Vec::new();
    for i in 0..200 {
        let api = uuid(1, (i * 7) % n_apis.max(1));
        let target = if i % 4 < 2 {
            lifecycle::State::Blocked
        } else {
            lifecycle::State::Published
        };
        let command = if i % 2 == 0 || n_subs == 0 {
            Command::ChangeLifecycle {
                api_id: api,
                target,
                expected_version: None,
            }
        } else {
            let subscription = uuid(3, (i * 104_729) % n_subs);
            Command::BlockSubscription {
                subscription_id: subscription,
                production_only: false,
            }
        };
        let _ = gatehouse_testkit::domain::try_run(&mut state, command);
        let started = Instant::now();
        let effects = state.take_effects();
        let next = table.apply(&state, &effects, &metrics);
        disk_copy = state.clone();
        times.push(started.elapsed());
        table = next;
    }
    times.sort();
    let ms = |q: f64| {
        times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_secs_f64() * 1000.0
    };
    println!(
        "one change (lifecycle or subscription block) into a new table: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(0.5),
        ms(0.99),
        ms(1.0),
    );
    println!(
        "after the changes: gateway total {:.1} MiB, RSS {:.0} MiB",
        (live() - base) as f64 / 1048576.0,
        rss_mib()
    );
    let started = Instant::now();
    let rebuilt = RoutingTable::build(&state, &metrics);
    println!(
        "the same state compiled whole: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    drop((table, rebuilt, disk_copy));
}
