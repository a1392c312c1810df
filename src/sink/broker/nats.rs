//! The NATS side of `--to` (async-nats, the official client). Core NATS
//! confirms nothing per message: what the server answered a flush for is
//! counted delivered. With `--to-ack`, JetStream acknowledges each message.

use std::time::Duration;

use async_nats::{Client, ConnectOptions};
use tokio::task::JoinSet;

use super::{BrokerTarget, Link, Outgoing, Status, Tally, backoff};

/// Commands the client holds while it reconnects: few, so what waits is in
/// our queue, counted and bounded by `--to-queue`.
const CLIENT_QUEUE: usize = 256;
/// Core NATS: a flush (a round trip that confirms all before it) at least this often.
const FLUSH_EVERY: u64 = 1024;
/// How long a flush may take before the server is taken to be away.
const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// JetStream: acknowledgements awaited at once.
const ACKS_IN_FLIGHT: usize = 256;

/// Publishes what comes through `link`'s queue until it closes and all is
/// confirmed, or until `link.stop`.
pub(super) async fn run(link: Link) {
    let (mut queue, tally, stop, status) = (link.queue, link.tally, link.stop, link.status);
    let client = match connect(&link.target, &status).await {
        Ok(client) => client,
        Err(error) => {
            status.failed(format!("cannot connect: {error}"));
            // Nothing can be delivered: count what comes as refused, until the end.
            while let Some(_unsent) = queue.recv().await {
                Tally::add(&tally.failed, 1);
            }
            return;
        }
    };
    let jetstream = link
        .config
        .ack
        .then(|| async_nats::jetstream::new(client.clone()));
    let mut acks = JoinSet::new();
    let mut unflushed = 0;
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(ack) = acks.join_next(), if acks.len() >= ACKS_IN_FLIGHT => {
                count_ack(ack, &tally, &status);
                continue;
            }
            next = queue.recv() => next,
        };
        let Some(Outgoing { topic, payload }) = next else {
            break;
        };
        let sent = match &jetstream {
            Some(jetstream) => tokio::select! {
                sent = jetstream.publish(topic, payload) => sent.map(|ack| {
                    acks.spawn(ack.into_future());
                }).map_err(|e| e.to_string()),
                _ = stop.cancelled() => break,
            },
            None => tokio::select! {
                sent = client.publish(topic, payload) => sent.map(|()| unflushed += 1)
                    .map_err(|e| e.to_string()),
                _ = stop.cancelled() => break,
            },
        };
        if let Err(error) = sent {
            Tally::add(&tally.failed, 1);
            status.failed(format!("refused: {error}"));
        }
        if unflushed >= FLUSH_EVERY || (unflushed > 0 && queue.is_empty()) {
            unflushed -= flush(&client, unflushed, &tally, &status).await;
        }
        while let Some(ack) = acks.try_join_next() {
            count_ack(ack, &tally, &status);
        }
    }
    // What was handed over is confirmed before the task ends (or `stop` cuts it short).
    loop {
        tokio::select! {
            ack = acks.join_next() => match ack {
                Some(ack) => count_ack(ack, &tally, &status),
                None => break,
            },
            _ = stop.cancelled() => return,
        }
    }
    while unflushed > 0 {
        tokio::select! {
            flushed = flush(&client, unflushed, &tally, &status) => unflushed -= flushed,
            _ = stop.cancelled() => return,
        }
    }
}

/// A client that connects (and reconnects) in the background with backoff;
/// what is published meanwhile waits in its small buffer, then in our queue.
async fn connect(target: &BrokerTarget, status: &Status) -> Result<Client, String> {
    let events = status.clone();
    let mut options = ConnectOptions::new()
        .name("portier")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .client_capacity(CLIENT_QUEUE)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|attempt| backoff(attempt.min(32) as u32))
        .event_callback(move |event| {
            let status = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => status.connected(),
                    async_nats::Event::Disconnected => status.failed("disconnected"),
                    async_nats::Event::ServerError(e) => status.failed(format!("server: {e}")),
                    async_nats::Event::ClientError(e) => status.failed(e),
                    _ => {}
                }
            }
        });
    if let Some((user, pass)) = &target.login {
        options = options.user_and_password(user.clone(), pass.clone());
    }
    options
        .connect(format!("nats://{}", target.host_port()))
        .await
        .map_err(|e| e.to_string())
}

/// Asks the server to confirm everything published so far; returns how many
/// messages that confirmed (all `unflushed`, or none if it did not answer).
async fn flush(client: &Client, unflushed: u64, tally: &Tally, status: &Status) -> u64 {
    match tokio::time::timeout(FLUSH_WAIT, client.flush()).await {
        Ok(Ok(())) => {
            Tally::add(&tally.delivered, unflushed);
            unflushed
        }
        Ok(Err(error)) => {
            status.failed(format!("cannot flush: {error}"));
            0
        }
        Err(_) => {
            status.failed("no answer to a flush: not connected");
            0
        }
    }
}

/// Counts one JetStream acknowledgement (or its refusal).
fn count_ack<E: std::fmt::Display>(
    ack: Result<Result<async_nats::jetstream::publish::PublishAck, E>, tokio::task::JoinError>,
    tally: &Tally,
    status: &Status,
) {
    match ack {
        Ok(Ok(_)) => Tally::add(&tally.delivered, 1),
        Ok(Err(error)) => {
            Tally::add(&tally.failed, 1);
            status.failed(format!("JetStream refused a message: {error}"));
        }
        Err(_) => Tally::add(&tally.failed, 1),
    }
}
