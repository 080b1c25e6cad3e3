//! The black-box tests, as one test binary (one link of the support code and the fakes,
//! instead of one per file). Each module starts the real daemon (the binary, or `app::run`
//! in process) against faithful fakes of BoA and Intuit/QuickBooks on 127.0.0.1:0.

mod support;

mod backup;
mod boa_fetch;
mod daemon;
mod demo;
mod drift;
mod engine;
mod fake_intuit_selftest;
mod fixings_e2e;
mod hardening;
mod home_currency;
mod layers;
mod migrate;
mod oauth;
mod postgres;
mod proxy;
mod scale;
mod schedule;
mod standby;
mod sync_api;
mod sync_e2e;
mod toolbox;
