//! The local call's wire protocol (version 1): every frame a client can send parses to a
//! frame or to an error code, never a panic; server frames carry `v` and round-trip.

use proptest::prelude::*;
use serde_json::json;
use switchboard_local_call::protocol::{
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

mod hub {
    use std::sync::Arc;

    use switchboard_agent::Presence;
    use switchboard_agent::edge::{CallEvent, Edge, User};
    use switchboard_core::{CallId, CallType, SystemClock};
    use switchboard_local_call::hub::{CallHub, HubEdge, PERSON_QUEUE};
    use switchboard_local_call::protocol::{EncodedFrame, ServerFrame, parse_server_frame};
    use tokio::sync::mpsc::Receiver;

    fn next(rx: &mut Receiver<EncodedFrame>) -> ServerFrame {
        let frame = rx.try_recv().expect("a frame is waiting");
        assert_eq!(
            parse_server_frame(frame.text()).as_ref(),
            Ok(frame.frame()),
            "the shared text is the frame's encoding"
        );
        frame.frame().clone()
    }

    /// People and the agent hear each other; joins and leaves reach the agent's presence, so
    /// the agent is alone (its idle clock runs) once the last person has left.
    #[tokio::test]
    async fn people_and_the_agent_hear_each_other_and_presence_follows() {
        let hub = CallHub::new(Arc::new(SystemClock));
        let (mut ada, mut ada_rx) = hub.join_person("c", "Ada");
        let ada_id = ada.participant().id.clone();
        let ServerFrame::Welcome {
            call_id,
            you,
            participants,
        } = next(&mut ada_rx)
        else {
            panic!("welcome first")
        };
        assert_eq!((call_id.as_str(), you.name.as_str()), ("c", "Ada"));
        assert!(participants.is_empty());

        let edge = HubEdge::new(hub.clone());
        let presence = Presence::new();
        let call = edge
            .create_call(&CallType::default(), &CallId::parse("c").unwrap())
            .await
            .unwrap();
        let agent = edge
            .join(&call, &User::new("agent", "Assistant"), presence.clone())
            .await
            .unwrap();
        let state = presence.state();
        assert!(state.joined && state.participants.contains(&ada_id) && !presence.is_alone());
        let ServerFrame::Joined { participant } = next(&mut ada_rx) else {
            panic!("the agent's join")
        };
        assert!(participant.agent);
        assert_eq!(participant.name, "Assistant");

        agent
            .send_message("Hello! How can I help you today?")
            .await
            .unwrap();
        let ServerFrame::Message { from, text, at } = next(&mut ada_rx) else {
            panic!("the greeting")
        };
        assert!(from.agent && text.starts_with("Hello") && at.ends_with('Z'));

        assert!(ada.say("What's the weather in Paris?"));
        assert_eq!(
            agent.next_event().await,
            Some(CallEvent::Message {
                from: User::new(&ada_id, "Ada"),
                text: "What's the weather in Paris?".into()
            })
        );
        assert!(
            matches!(next(&mut ada_rx), ServerFrame::Message { from, .. } if from.id == ada_id)
        );

        let (bob, mut bob_rx) = hub.join_person("c", "Bob");
        let ServerFrame::Welcome { participants, .. } = next(&mut bob_rx) else {
            panic!()
        };
        let names: Vec<&str> = participants.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Assistant", "Ada"], "agents first");
        assert!(
            matches!(next(&mut ada_rx), ServerFrame::Joined { participant } if participant.name == "Bob")
        );
        assert!(
            matches!(agent.next_event().await, Some(CallEvent::ParticipantJoined(u)) if u.name == "Bob")
        );
        drop(bob);
        assert!(
            matches!(next(&mut ada_rx), ServerFrame::Left { participant } if participant.name == "Bob")
        );
        assert!(
            matches!(agent.next_event().await, Some(CallEvent::ParticipantLeft(u)) if u.name == "Bob")
        );

        ada.leave();
        assert!(
            presence.is_alone(),
            "the last person left: the idle clock runs"
        );
        assert!(!ada.say("still there?"), "a person who left cannot speak");
        assert!(
            matches!(agent.next_event().await, Some(CallEvent::ParticipantLeft(u)) if u.id == ada_id)
        );
        assert_eq!(hub.participants("c").len(), 1);
        agent.leave().await;
        assert!(!presence.state().joined);
        assert!(hub.participants("c").is_empty(), "the empty room is gone");
        assert_eq!(agent.next_event().await, None);
    }

    /// A person who stops reading is disconnected once their queue is full; the others see
    /// them leave and the call goes on.
    #[tokio::test]
    async fn a_person_who_does_not_read_is_dropped_and_the_call_goes_on() {
        let hub = CallHub::new(Arc::new(SystemClock));
        let (slow, _slow_rx) = hub.join_person("c", "Slow");
        let (fast, mut fast_rx) = hub.join_person("c", "Fast");
        let presence = Presence::new();
        let edge = HubEdge::new(hub.clone());
        let call = edge
            .create_call(&CallType::default(), &CallId::parse("c").unwrap())
            .await
            .unwrap();
        let agent = edge
            .join(&call, &User::new("agent", "Assistant"), presence.clone())
            .await
            .unwrap();
        assert_eq!(presence.state().participants.len(), 2);
        let mut left = None;
        for i in 0..=PERSON_QUEUE {
            agent.send_message(&format!("message {i}")).await.unwrap();
            while let Ok(frame) = fast_rx.try_recv() {
                if let ServerFrame::Left { participant } = frame.frame() {
                    left = Some(participant.clone());
                }
            }
        }
        assert_eq!(left.map(|p| p.name), Some("Slow".to_owned()));
        assert_eq!(presence.state().participants.len(), 1, "only Fast is left");
        assert!(!slow.say("hello?"), "the dropped person is out of the call");
        assert!(fast.say("still here"));
    }

    #[tokio::test]
    async fn two_agents_in_one_call_hear_the_people_but_not_each_other() {
        let hub = CallHub::new(Arc::new(SystemClock));
        let edge = HubEdge::new(hub.clone());
        let call = edge
            .create_call(&CallType::default(), &CallId::parse("c").unwrap())
            .await
            .unwrap();
        let (first_presence, second_presence) = (Presence::new(), Presence::new());
        let mut first = edge
            .join(&call, &User::new("a1", "First"), first_presence.clone())
            .await
            .unwrap();
        let mut second = edge
            .join(&call, &User::new("a2", "Second"), second_presence.clone())
            .await
            .unwrap();
        let (ada, mut ada_rx) = hub.join_person("c", "Ada");
        let ServerFrame::Welcome { participants, .. } = next(&mut ada_rx) else {
            panic!("welcome first")
        };
        assert_eq!(participants.len(), 2, "Ada sees both agents");
        // Each agent sees Ada join, and only Ada: another agent is not a participant.
        for (agent, presence) in [
            (&mut first, &first_presence),
            (&mut second, &second_presence),
        ] {
            assert!(matches!(
                agent.next_event().await,
                Some(CallEvent::ParticipantJoined(user)) if user.name == "Ada"
            ));
            assert_eq!(presence.state().participants.len(), 1);
        }
        // An agent's message reaches Ada, not the other agent (which would answer it, and
        // so on forever); Ada's reaches both.
        first.send_message("Hello from First").await.unwrap();
        assert!(
            matches!(next(&mut ada_rx), ServerFrame::Message { text, .. } if text == "Hello from First")
        );
        assert!(ada.say("hi both"));
        for agent in [&mut first, &mut second] {
            assert!(matches!(
                agent.next_event().await,
                Some(CallEvent::Message { text, .. }) if text == "hi both"
            ));
        }
        // The first agent leaving is no event for the second.
        first.leave().await;
        assert!(
            matches!(next(&mut ada_rx), ServerFrame::Message { .. }),
            "Ada's own message"
        );
        assert!(
            matches!(next(&mut ada_rx), ServerFrame::Left { participant } if participant.name == "First")
        );
        drop(ada);
        assert!(matches!(
            second.next_event().await,
            Some(CallEvent::ParticipantLeft(user)) if user.name == "Ada"
        ));
        assert!(second_presence.is_alone());
    }
}
