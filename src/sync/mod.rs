//! Syncing BoA rates into QuickBooks companies.
//!
//! For now this holds only the pure rate arithmetic ([`rates`]): which fixing is in force on a
//! date and what each company must be sent. The engine that talks to QuickBooks comes later
//! and must not duplicate that arithmetic.

pub mod rates;
