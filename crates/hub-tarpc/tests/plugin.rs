//! tarpc over the hub between two processes: the host here, the plugin this test binary run
//! again, the same test (`--exact calls_a_plugin_process_over_the_hub`) with
//! `HUB_TARPC_TEST_PLUGIN` set in its environment, which makes it the plugin.
//!
//! Every call's result is checked: unary calls, 64 tasks calling at once, 1 MiB arguments;
//! then the host leaves and the plugin must exit successfully (its stream ended in order).

use std::process::{Command, Stdio};
use std::sync::Arc;

use futures::StreamExt;
use hub_tarpc::{HostTransport, PeerTransport};
use hub_transport::aio::AsyncHost;
use hub_transport::{Host, HubConfig};
use tarpc::server::{BaseChannel, Channel};
use tarpc::{client, context};

/// Set in the plugin's environment: the test is the plugin.
const ROLE_ENV: &str = "HUB_TARPC_TEST_PLUGIN";
/// Tasks calling at once.
const TASKS: u64 = 64;
/// Calls per task.
const PER_TASK: u64 = 25;

#[tarpc::service]
trait Calc {
    /// `a + b`, wrapping.
    async fn add(a: u64, b: u64) -> u64;
    /// The length of `data` and the wrapping sum of its bytes, each times its index + 1.
    async fn digest(data: Vec<u8>) -> (u64, u64);
}

#[derive(Clone)]
struct CalcServer;

impl Calc for CalcServer {
    async fn add(self, _: context::Context, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    async fn digest(self, _: context::Context, data: Vec<u8>) -> (u64, u64) {
        (data.len() as u64, digest(&data))
    }
}

/// The digest both sides compute: position-dependent, so a reordered or shifted byte shows.
fn digest(data: &[u8]) -> u64 {
    data.iter().enumerate().fold(0u64, |sum, (i, &b)| {
        sum.wrapping_add((i as u64 + 1).wrapping_mul(u64::from(b)))
    })
}

/// The plugin: serve `Calc` until the host leaves (the stream ends, `for_each` returns).
fn plugin_role() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let transport = PeerTransport::from_env().expect("attach to the hub");
        BaseChannel::with_defaults(transport)
            .execute(CalcServer.serve())
            .for_each(|call| async {
                tokio::spawn(call);
            })
            .await;
    });
}

#[test]
fn calls_a_plugin_process_over_the_hub() {
    if std::env::var_os(ROLE_ENV).is_some() {
        return plugin_role();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(host_role());
}

/// The host: spawn the plugin, call it, check every result.
async fn host_role() {
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("a hub");
    let mut plugin = Command::new(std::env::current_exe().expect("this test binary"));
    plugin
        .args([
            "calls_a_plugin_process_over_the_hub",
            "--exact",
            "--nocapture",
        ])
        .env(ROLE_ENV, "1")
        .stdout(Stdio::null());
    let (peer, mut child) = host.spawn_peer(&mut plugin).expect("spawn the plugin");
    let host = Arc::new(AsyncHost::new(host).expect("an async host"));
    let new = CalcClient::new(
        client::Config::default(),
        HostTransport::new(Arc::clone(&host), peer),
    );
    let dispatch = tokio::spawn(new.dispatch);
    let calc = new.client;

    for i in 0..500u64 {
        let sum = calc
            .add(context::current(), i, i * i)
            .await
            .expect("a call");
        assert_eq!(sum, i + i * i);
    }

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let calc = calc.clone();
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let a = task << 32;
                    let sum = calc.add(context::current(), a, i).await.expect("a call");
                    assert_eq!(sum, a + i, "task {task}, call {i}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a calling task");
    }

    for round in 0..4u8 {
        let data: Vec<u8> = (0..(1usize << 20))
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(round))
            .collect();
        let want = (data.len() as u64, digest(&data));
        let got = calc.digest(context::current(), data).await.expect("a call");
        assert_eq!(got, want, "round {round}");
    }

    // Leave: the client, then its dispatch (which owns the transport), then the host's last
    // reference (its goodbye ends the plugin's stream).
    drop(calc);
    dispatch
        .await
        .expect("the dispatch task")
        .expect("the dispatch ends cleanly");
    drop(host);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("the waiting task")
        .expect("wait for the plugin");
    assert!(status.success(), "the plugin exited with {status}");
}
