//! `POST /v1/events` bodies: any bytes must parse into at most `max_batch` valid events, or fail
//! with an error that maps to 400/413.
#![no_main]

use herald_protocol::{BatchError, PublishBody};
use libfuzzer_sys::fuzz_target;

const MAX_BATCH: usize = 16;

fuzz_target!(|data: &[u8]| {
    match PublishBody::parse(data, MAX_BATCH) {
        Ok(body) => {
            let events = body.into_events();
            assert!(!events.is_empty() && events.len() <= MAX_BATCH);
        }
        Err(BatchError::TooMany { .. }) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
