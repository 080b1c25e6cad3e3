//! The Bank of Albania source: what a fixing is, how the page is read, fetched and imported.

pub mod model;
