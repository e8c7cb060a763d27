//! The local call's wire protocol (version 1): every frame a client can send parses to a
//! frame or to an error code, never a panic; server frames carry `v` and round-trip.

use proptest::prelude::*;
use serde_json::json;
use switchboard_agent_task::local_call::{
    ClientFrame, ErrorCode, MAX_FRAME_BYTES, MAX_NAME_CHARS, MAX_TEXT_CHARS, Participant,
    ServerFrame, encode, encode_client, parse_client_frame, parse_server_frame,
};

fn code(text: &str) -> ErrorCode {
    parse_client_frame(text).expect_err(text).code
}

#[test]
fn the_three_client_frames_parse() {
    assert_eq!(
        parse_client_frame(r#"{"v":1,"type":"join","name":"Ada"}"#).unwrap(),
        ClientFrame::Join { name: "Ada".into() }
    );
    assert_eq!(
        parse_client_frame(r#"{"type":"say","v":1,"text":"What's the weather in Paris?"}"#)
            .unwrap(),
        ClientFrame::Say {
            text: "What's the weather in Paris?".into()
        }
    );
    assert_eq!(
        parse_client_frame(r#"{"v":1,"type":"leave"}"#).unwrap(),
        ClientFrame::Leave
    );
    for frame in [
        ClientFrame::Join {
            name: "Grace".into(),
        },
        ClientFrame::Say { text: "hi".into() },
        ClientFrame::Leave,
    ] {
        assert_eq!(parse_client_frame(&encode_client(&frame)).unwrap(), frame);
    }
}

#[test]
fn every_bad_frame_has_its_error_code() {
    assert_eq!(code("not json"), ErrorCode::InvalidJson);
    assert_eq!(code("[1,2]"), ErrorCode::InvalidJson);
    assert_eq!(code(r#""join""#), ErrorCode::InvalidJson);
    assert_eq!(
        code(r#"{"type":"join","name":"a"}"#),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        code(r#"{"v":2,"type":"join","name":"a"}"#),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        code(r#"{"v":"1","type":"join","name":"a"}"#),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(code(r#"{"v":1}"#), ErrorCode::UnknownType);
    assert_eq!(
        code(r#"{"v":1,"type":"shout","text":"a"}"#),
        ErrorCode::UnknownType
    );
    assert_eq!(code(r#"{"v":1,"type":7}"#), ErrorCode::UnknownType);
    assert_eq!(code(r#"{"v":1,"type":"join"}"#), ErrorCode::InvalidFrame);
    assert_eq!(
        code(r#"{"v":1,"type":"join","name":5}"#),
        ErrorCode::InvalidFrame
    );
    assert_eq!(
        code(r#"{"v":1,"type":"join","name":""}"#),
        ErrorCode::InvalidFrame
    );
    assert_eq!(
        code(r#"{"v":1,"type":"join","name":"a\u0007b"}"#),
        ErrorCode::InvalidFrame
    );
    assert_eq!(
        code(r#"{"v":1,"type":"say","text":""}"#),
        ErrorCode::InvalidFrame
    );
    assert_eq!(
        code(r#"{"v":1,"type":"say","text":"a","extra":1}"#),
        ErrorCode::InvalidFrame
    );
    let long_name = json!({"v": 1, "type": "join", "name": "n".repeat(MAX_NAME_CHARS + 1)});
    assert_eq!(code(&long_name.to_string()), ErrorCode::InvalidFrame);
    let longest = json!({"v": 1, "type": "say", "text": "é".repeat(MAX_TEXT_CHARS)});
    assert!(
        parse_client_frame(&longest.to_string()).is_ok(),
        "limits count characters"
    );
    let long_text = json!({"v": 1, "type": "say", "text": "t".repeat(MAX_TEXT_CHARS + 1)});
    assert_eq!(code(&long_text.to_string()), ErrorCode::InvalidFrame);
    let huge = format!(
        r#"{{"v":1,"type":"say","text":"{}"}}"#,
        "x".repeat(MAX_FRAME_BYTES)
    );
    assert_eq!(code(&huge), ErrorCode::FrameTooLarge);
    // The error frame a server sends back.
    let error = parse_client_frame("{").unwrap_err().to_frame();
    let sent: serde_json::Value = serde_json::from_str(&encode(&error)).unwrap();
    assert_eq!(sent["v"], 1);
    assert_eq!(sent["type"], "error");
    assert_eq!(sent["code"], "invalid_json");
    assert!(sent["detail"].as_str().unwrap().starts_with("not JSON"));
}

#[test]
fn server_frames_carry_the_version_and_round_trip() {
    let ada = Participant {
        id: "p-1".into(),
        name: "Ada".into(),
        agent: false,
    };
    let agent = Participant {
        id: "agent".into(),
        name: "Assistant".into(),
        agent: true,
    };
    let frames = [
        ServerFrame::Welcome {
            call_id: "c".into(),
            you: ada.clone(),
            participants: vec![agent.clone()],
        },
        ServerFrame::Joined {
            participant: ada.clone(),
        },
        ServerFrame::Left {
            participant: ada.clone(),
        },
        ServerFrame::Message {
            from: agent,
            text: "Hello! How can I help you today?".into(),
            at: "2026-11-28T22:00:00Z".into(),
        },
        ServerFrame::Error {
            code: ErrorCode::NotJoined,
            detail: "join first".into(),
        },
        ServerFrame::Ended {
            reason: "requested".into(),
        },
    ];
    for frame in frames {
        let text = encode(&frame);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["v"], 1, "{text}");
        assert_eq!(parse_server_frame(&text).unwrap(), frame);
    }
    assert_eq!(
        parse_server_frame(r#"{"v":2,"type":"ended","reason":"x"}"#)
            .unwrap_err()
            .code,
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        ErrorCode::BinaryNotSupported.to_string(),
        "binary_not_supported"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a client sends, the parser answers (no panic), and a refusal has a detail.
    #[test]
    fn any_text_parses_or_is_refused_with_a_detail(text in any::<String>()) {
        if let Err(e) = parse_client_frame(&text) {
            prop_assert!(!e.detail.is_empty());
        }
    }

    /// Frames built from arbitrary field values parse or are refused as invalid, by the
    /// stated bounds.
    #[test]
    fn field_bounds_are_the_stated_ones(name in ".{0,80}", text in ".{0,40}") {
        let join = json!({"v": 1, "type": "join", "name": name}).to_string();
        let chars = name.chars().count();
        let ok = (1..=MAX_NAME_CHARS).contains(&chars) && !name.chars().any(char::is_control);
        prop_assert_eq!(parse_client_frame(&join).is_ok(), ok, "{}", join);
        let say = json!({"v": 1, "type": "say", "text": text}).to_string();
        prop_assert_eq!(parse_client_frame(&say).is_ok(), !text.is_empty());
    }
}
