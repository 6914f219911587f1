//! Any binary WebSocket frame, as the daemon (`ClientMsg`) and the clients
//! (`ServerMsg`) decode it: never a panic, and whatever decodes encodes
//! back, in both encodings, to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_fuzz::round_trip;
use tether_proto::{ClientMsg, Encoding, ServerMsg};

fuzz_target!(|data: &[u8]| {
    round_trip::<ClientMsg>(data, Encoding::MsgPack);
    round_trip::<ServerMsg>(data, Encoding::MsgPack);
});
