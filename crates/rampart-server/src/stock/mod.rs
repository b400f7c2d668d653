//! Stock that never oversells: reservations held against a SKU's stock,
//! confirmed, cancelled or expired back, with request keys so a retry is
//! never a second purchase. The database is the truth.
//!
//! | file | what |
//! |---|---|
//! | `config.rs` | `[stock]`: hold time, key retention, group commit, reaper |
//! | `store.rs` | the `stock` and `reservations` tables; per-request and batched reservation transactions |
//! | `group_commit.rs` | one transaction for the reservations of one SKU arriving together |
//! | `service.rs` | `Stock`: the request-key table in front of the store |
//! | `reaper.rs` | the periodic return of expired holds |
//! | `routes.rs` | the HTTP routes and their OpenAPI table |

pub mod config;
pub mod group_commit;
pub mod reaper;
pub mod routes;
pub mod service;
pub mod store;

pub use service::Stock;
