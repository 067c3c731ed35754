//! Replication: followers pull from leaders (`fetcher`), over a transport the front end
//! provides (`transport`: the broker core never sees Kafka wire types), and leaders track their
//! followers (`progress`) to move the high watermark and propose ISR changes. The partition-side
//! operations live in `replica`. A fetcher whose leader's connection breaks or is refused marks
//! it in `gone_leaders`, which Metadata answers consult.

pub mod fetcher;
pub mod gone_leaders;
pub mod progress;
pub mod replica;
pub mod transport;
