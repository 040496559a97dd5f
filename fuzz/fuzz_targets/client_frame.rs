//! Client → server frames: any text a socket can deliver must parse or fail cleanly.
#![no_main]

use herald_protocol::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The socket only hands text frames (valid UTF-8) to the parser.
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ClientFrame::parse(text) {
        Ok(_) => {}
        Err(e) => {
            // Every refusal carries a code and a message for the error frame.
            assert!(!e.code().is_empty());
            assert!(!e.to_string().is_empty());
        }
    }
});
