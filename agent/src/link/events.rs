//! The writer of the control stream: the inventory on connect (and what the idle enforcer
//! has to tell again), then deltas, metrics and heartbeats, in order, with sequence numbers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxlab_link::write_frame;
use proxlab_protocol::limits::MAX_FRAME_LEN;
use proxlab_protocol::{Event, EventFrame};
use tokio::sync::broadcast::error::RecvError;

use crate::collect::{Collector, Report};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default()
}

struct Writer {
    send: quinn::SendStream,
    seq: u64,
}

impl Writer {
    async fn send(&mut self, event: Event) -> Result<(), String> {
        self.seq += 1;
        let frame = EventFrame {
            seq: self.seq,
            event,
        };
        write_frame(&mut self.send, &frame, MAX_FRAME_LEN)
            .await
            .map_err(|err| err.to_string())
    }

    async fn inventory(&mut self, collector: &Collector) -> Result<(), String> {
        let inventory = collector.snapshot();
        self.send(Event::Inventory { inventory }).await
    }
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
    let mut writer = Writer { send, seq: 0 };
    if let Err(err) = writer.inventory(collector).await {
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
            _ = ticker.tick() => writer.send(Event::Heartbeat { unix_ms: unix_ms() }).await,
            report = reports.recv() => match report {
                Ok(Report::Event(event)) => writer.send(event).await,
                // A resync was asked for, or this session fell behind: send everything.
                Ok(Report::Resync) | Err(RecvError::Lagged(_)) => writer.inventory(collector).await,
                Err(RecvError::Closed) => return "the collector stopped".into(),
            },
        };
        if let Err(err) = result {
            return err;
        }
    }
}
