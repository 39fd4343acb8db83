//! Expert placement for a moe-cluster: the pure planner, the election of the coordinator that
//! writes the placement, and what the elected one does. The state they read and write in etcd
//! (keys, records, the connection, leases, watchers) is the `moe-state` crate's.
//!
//! * [`planner`]: the pure placement planner.
//! * [`election`]: the coordinator leader key and revision-checked placement writes.
//! * [`leader`]: what the elected coordinator does — re-plan on membership and popularity change.

pub mod election;
pub mod leader;
pub mod planner;
