//! The writer of the control stream: events go out in order, with sequence numbers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxlab_link::write_frame;
use proxlab_protocol::limits::MAX_FRAME_LEN;
use proxlab_protocol::{Event, EventFrame};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default()
}

/// Sends a heartbeat every `interval` until the stream fails. Returns the error.
pub(super) async fn pump(mut send: quinn::SendStream, interval: Duration) -> String {
    let mut seq = 0u64;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        seq += 1;
        let frame = EventFrame {
            seq,
            event: Event::Heartbeat { unix_ms: unix_ms() },
        };
        if let Err(err) = write_frame(&mut send, &frame, MAX_FRAME_LEN).await {
            return err.to_string();
        }
    }
}
