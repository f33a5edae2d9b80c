use std::time::Duration;

use async_nats::jetstream;
use fleet_proto::v1::{WorkItem, WorkReason};
use fleet_runtime::topology::{
    Topology, TopologyArgs, TopologyError, WORKER_DISCOVERY, WORKER_MANUAL,
};
use fleet_tests::stack;
use futures::StreamExt;
use prost::Message;

async fn connect() -> jetstream::Context {
    let url = stack::nats_url();
    let client = async_nats::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("NATS at {url} is not reachable (is the stack up?): {e}"));
    jetstream::new(client)
}

fn topology() -> Topology {
    Topology::new(TopologyArgs {
        nats_prefix: stack::unique("smoke"),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn work_item_goes_through_stream_and_consumer_and_is_acked() {
    let js = connect().await;
    let topo = topology();
    topo.ensure(&js).await.unwrap();
    // A second start-up (another replica) changes nothing and does not fail.
    topo.ensure(&js).await.unwrap();

    let item = WorkItem {
        id: "smoke-1".into(),
        repo: "github.com/ossf/scorecard".into(),
        reason: WorkReason::Manual as i32,
        ..Default::default()
    };
    js.publish(topo.manual_subject(), item.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();

    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(topo.work_stream())
        .await
        .unwrap()
        .get_consumer(WORKER_MANUAL)
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let msg = batch.next().await.expect("one message").unwrap();
    assert_eq!(WorkItem::decode(msg.payload.clone()).unwrap(), item);
    msg.double_ack().await.unwrap();

    let mut consumer = consumer;
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_ack_pending, 0);
    // Work-queue retention: an acked item leaves the stream.
    let mut stream = js.get_stream(topo.work_stream()).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
}

#[tokio::test]
async fn conflicting_stream_is_a_clear_error_and_left_alone() {
    let js = connect().await;
    let topo = topology();
    // Someone created the dead-letter stream by hand with another retention.
    js.create_stream(jetstream::stream::Config {
        name: topo.dead_stream(),
        subjects: vec![topo.dead_subjects()],
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = topo.ensure(&js).await.unwrap_err();
    match &err {
        TopologyError::Mismatch { setting, name, .. } => {
            assert_eq!(*setting, "max_age");
            assert_eq!(*name, topo.dead_stream());
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    assert!(err.to_string().contains("nothing was modified"), "{err}");
    let mut stream = js.get_stream(topo.dead_stream()).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().config.max_age,
        Duration::from_secs(3600)
    );
}

/// A fleet deployed before the discovery lane: its work stream has the manual and scheduled
/// subjects only, and holds queued work. Starting the new release adds the subject and the
/// consumer, keeps the queue, and a discovery published then reaches the new consumer.
#[tokio::test]
async fn a_work_stream_from_before_the_discovery_lane_gains_it_and_keeps_its_work() {
    let js = connect().await;
    let topo = topology();
    let mut before = topo
        .streams()
        .into_iter()
        .find(|s| s.name == topo.work_stream())
        .unwrap();
    before.subjects = vec![topo.scheduled_subject(), topo.manual_subject()];
    js.create_stream(before).await.unwrap();
    let queued = WorkItem {
        id: "queued-before".into(),
        repo: "github.com/ossf/scorecard".into(),
        ..Default::default()
    };
    js.publish(topo.scheduled_subject(), queued.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();

    topo.ensure(&js).await.unwrap();
    let mut work = js.get_stream(topo.work_stream()).await.unwrap();
    let info = work.info().await.unwrap();
    assert!(
        info.config.subjects.contains(&topo.discovery_subject()),
        "{:?}",
        info.config.subjects
    );
    assert_eq!(info.state.messages, 1, "the queued work is still there");
    let discovery = WorkItem {
        id: "discovered".into(),
        repo: "github.com/ossf/scorecard".into(),
        reason: WorkReason::Discovery as i32,
        ..Default::default()
    };
    js.publish(topo.discovery_subject(), discovery.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let consumer: jetstream::consumer::PullConsumer =
        work.get_consumer(WORKER_DISCOVERY).await.unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let msg = batch.next().await.expect("the discovery").unwrap();
    assert_eq!(WorkItem::decode(msg.payload.clone()).unwrap(), discovery);
    // A second start-up finds nothing left to change.
    topo.ensure(&js).await.unwrap();
}

#[tokio::test]
async fn replicas_starting_together_agree() {
    let js = connect().await;
    let topo = topology();
    let runs = (0..4).map(|_| topo.ensure(&js));
    for result in futures::future::join_all(runs).await {
        result.unwrap();
    }
}
