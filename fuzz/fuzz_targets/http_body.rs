//! Bodies of the one-shot HTTP routes (`POST /v1/exec`, `/v1/code`, their
//! answers and errors), in both encodings: never a panic, whatever decodes
//! encodes back to the same value, and the JSON answer's text form
//! (`ExecResponse::to_json`/`from_json`) keeps the output bytes exact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_fuzz::round_trip;
use tether_proto::{CodeRequest, Encoding, ExecRequest, ExecResponse, HttpError};

fuzz_target!(|data: &[u8]| {
    for enc in [Encoding::MsgPack, Encoding::Json] {
        round_trip::<ExecRequest>(data, enc);
        round_trip::<CodeRequest>(data, enc);
        round_trip::<HttpError>(data, enc);
        if let Some(resp) = round_trip::<ExecResponse>(data, enc) {
            let text = resp.to_json();
            match ExecResponse::from_json(&text) {
                Ok(back) => {
                    assert_eq!(back.stdout, resp.stdout, "stdout changed through to_json");
                    assert_eq!(back.stderr, resp.stderr, "stderr changed through to_json");
                    assert_eq!(back.command, resp.command);
                    assert_eq!(back.exit_code, resp.exit_code);
                }
                Err(e) => panic!("to_json of {resp:?} does not read back: {e}"),
            }
        }
    }
    // Whatever a client sends as a JSON answer body must not panic either.
    let _ = ExecResponse::from_json(data);
});
