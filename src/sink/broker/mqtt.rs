//! The MQTT side of `--to` (rumqttc). Its event loop is polled in a task of
//! its own, so the network always makes progress while messages are handed
//! over; it reconnects with backoff for as long as portier runs.

use std::sync::Arc;

use rumqttc::{AsyncClient, EventLoop, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{BrokerKind, Link, Outgoing, Status, Tally, backoff};

/// Requests rumqttc holds between our queue and the socket: few, so what
/// waits is in our queue, where it is counted and bounded by `--to-queue`.
const CLIENT_QUEUE: usize = 64;
/// MQTT's own limit on a packet: no message portier receives is refused for its size.
const MAX_PACKET: usize = 268_435_455;
/// We never subscribe: what comes in is acknowledgements and pings.
const MAX_INCOMING: usize = 64 * 1024;

/// Publishes what comes through `link`'s queue until it closes and all is
/// delivered, or until `link.stop`.
pub(super) async fn run(link: Link, tls: Option<Arc<rustls::ClientConfig>>) {
    let Link {
        target,
        config,
        mut queue,
        tally,
        stop,
        status,
    } = link;
    let pid = std::process::id();
    let client_id = config.client_id.clone();
    let mut options = MqttOptions::new(
        client_id.unwrap_or_else(|| format!("portier-{pid}")),
        &target.host,
        target.port,
    );
    options
        .set_keep_alive(config.keepalive)
        .set_max_packet_size(MAX_INCOMING, MAX_PACKET);
    if let Some((user, pass)) = &target.login {
        options.set_credentials(user, pass);
    }
    if let (BrokerKind::Mqtt { tls: true }, Some(tls)) = (target.kind, tls) {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    let qos = match config.at_least_once {
        true => QoS::AtLeastOnce,
        false => QoS::AtMostOnce,
    };
    let (client, events) = AsyncClient::new(options, CLIENT_QUEUE);
    let progress = Arc::new(Notify::new());
    let network = tokio::spawn(poll(
        events,
        qos,
        tally.clone(),
        progress.clone(),
        status,
        stop.clone(),
    ));
    loop {
        let next = tokio::select! {
            next = queue.recv() => next,
            _ = stop.cancelled() => break,
        };
        let Some(Outgoing { topic, payload }) = next else {
            break;
        };
        tokio::select! {
            // Fails only once the event loop is gone (at `stop`): the message
            // stays counted as not delivered.
            sent = client.publish_bytes(topic, qos, false, payload) => if sent.is_err() {
                break;
            },
            _ = stop.cancelled() => break,
        }
    }
    // Wait until the broker took all that was handed over.
    while tally.waiting() > 0 {
        tokio::select! {
            _ = progress.notified() => {}
            _ = stop.cancelled() => break,
        }
    }
    let _ = client.try_disconnect();
    tokio::select! {
        _ = network => {}
        _ = stop.cancelled() => {}
    }
}

/// Drives the connection: counts what the broker took, reconnects on failure.
async fn poll(
    mut events: EventLoop,
    qos: QoS,
    tally: Arc<Tally>,
    progress: Arc<Notify>,
    status: Status,
    stop: CancellationToken,
) {
    use rumqttc::{Event, Outgoing, Packet};
    let mut attempt = 0;
    loop {
        // A new session (a restarted broker) would clear what rumqttc keeps
        // to resend: hold it aside while connecting, and give it back after.
        let connecting = events.network.is_none();
        let kept = match connecting {
            true => std::mem::take(&mut events.pending),
            false => Default::default(),
        };
        let event = tokio::select! {
            event = events.poll() => event,
            _ = stop.cancelled() => return,
        };
        if connecting {
            let mut pending = kept;
            pending.append(&mut events.pending);
            events.pending = pending;
        }
        let delivered = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                status.connected();
                attempt = 0;
                false
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => qos == QoS::AtMostOnce,
            Ok(Event::Incoming(Packet::PubAck(_))) => qos == QoS::AtLeastOnce,
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => false,
            Err(error) => {
                status.failed(format!("cannot publish: {error}"));
                tokio::select! {
                    _ = tokio::time::sleep(backoff(attempt)) => {}
                    _ = stop.cancelled() => return,
                }
                attempt += 1;
                false
            }
        };
        if delivered {
            Tally::add(&tally.delivered, 1);
            progress.notify_one();
        }
    }
}
