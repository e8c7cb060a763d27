//! The AWS adapters' tests, one binary, against moto in server mode (started by
//! `./scripts/test`, which sets `SWITCHBOARD_TEST_DYNAMODB_ENDPOINT`). Every test creates its
//! own uniquely named table; the emulator is never reset.
#![allow(unreachable_pub)]

mod dynamodb;
mod ecs;
mod mocked;
mod pool;
use switchboard_testkit as support;
