//! The writer of the control stream: the inventory on connect (and what the idle enforcer
//! has to tell again), then deltas, metrics and heartbeats, in order, with sequence numbers.

use std::time::Duration;

use proxlab_protocol::Event;
use tokio::sync::broadcast::error::RecvError;

use super::control::{EventWriter, heartbeat};
use crate::collect::{Collector, Report};

async fn send_inventory(writer: &mut EventWriter, collector: &Collector) -> Result<(), String> {
    let inventory = collector.snapshot();
    writer.send(Event::Inventory { inventory }).await
}

/// Runs until the stream fails. Returns the error.
pub(super) async fn pump(
    send: quinn::SendStream,
    interval: Duration,
    collector: &Collector,
    replay: Vec<Event>,
) -> String {
    // Subscribe before the snapshot, so nothing between the two is missed.
    let mut reports = collector.subscribe();
    let mut writer = EventWriter::new(send);
    if let Err(err) = send_inventory(&mut writer, collector).await {
        return err;
    }
    for event in replay {
        if let Err(err) = writer.send(event).await {
            return err;
        }
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            _ = ticker.tick() => writer.send(heartbeat()).await,
            report = reports.recv() => match report {
                Ok(Report::Event(event)) => writer.send(event).await,
                // A resync was asked for, or this session fell behind: send everything.
                Ok(Report::Resync) | Err(RecvError::Lagged(_)) => send_inventory(&mut writer, collector).await,
                Err(RecvError::Closed) => return "the collector stopped".into(),
            },
        };
        if let Err(err) = result {
            return err;
        }
    }
}
