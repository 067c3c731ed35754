//! The async runtime openraft runs on: Tokio, except that a Raft RPC is never given less than
//! `RPC_TIME_LIMIT_FLOOR` to answer.
//!
//! Why: openraft 0.9 bounds every AppendEntries (log replication, heartbeats, the heartbeats
//! that confirm leadership for a read) by the Raft heartbeat interval, 62 ms with the default
//! broker heartbeat, and a vote by the shortest election timeout. It enforces that bound itself,
//! through this trait's `timeout`, around our network call. A voter whose round trip is longer
//! than the heartbeat interval (a link with 40 ms of delay each way, or one lost segment that
//! TCP sends again after 200 ms) then never gets an answer to the leader in time: it is never
//! counted as replicated. While the other voters are up that costs nothing, but when it is one
//! of the only two voters left, the controller can commit nothing at all until the link
//! recovers. Kafka's controller quorum allows its requests seconds for the same reason.
//!
//! A longer limit costs little: each follower has its own replication stream, so a slow or
//! silent one holds up only its own stream, and an election or a leadership check finishes as
//! soon as a majority answers. A peer whose process is gone still fails at once (refused or
//! reset), which is what fencing and the stand-in election look at (`controller::stand_in`).

use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};

/// The least time a Raft RPC is given: a round trip of a few hundred milliseconds plus a TCP
/// retransmission fits. Not longer than the broker session (1 s by default), so a leader that
/// cannot reach a follower notices within one.
pub const RPC_TIME_LIMIT_FLOOR: Duration = Duration::from_secs(1);

/// The time a Raft RPC that openraft would give `asked` gets.
pub fn rpc_time_limit(asked: Duration) -> Duration {
    asked.max(RPC_TIME_LIMIT_FLOOR)
}

/// Tokio with the RPC time limit floor (module docs).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RaftRuntime;

type Tokio = TokioRuntime;

impl AsyncRuntime for RaftRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <Tokio as AsyncRuntime>::ThreadLocalRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    /// openraft calls this only around RPCs (AppendEntries, Vote, InstallSnapshot) and in
    /// `Raft::wait`, which FerryMQ does not use; every one of them gets the floor.
    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(rpc_time_limit(duration), future)
    }

    /// A deadline is kept as given: openraft 0.9 sets none around RPCs.
    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Tokio::thread_rng()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        Tokio::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_limits_are_raised_to_the_floor_and_long_ones_kept() {
        assert_eq!(
            rpc_time_limit(Duration::from_millis(62)),
            RPC_TIME_LIMIT_FLOOR
        );
        assert_eq!(
            rpc_time_limit(Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }

    #[tokio::test]
    async fn an_answer_slower_than_the_heartbeat_interval_is_still_waited_for() {
        let slow = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "answer"
        };
        let got = RaftRuntime::timeout(Duration::from_millis(62), slow).await;
        assert_eq!(got.unwrap(), "answer");
        let started = std::time::Instant::now();
        let silent = std::future::pending::<()>();
        assert!(RaftRuntime::timeout(Duration::from_millis(62), silent)
            .await
            .is_err());
        assert!(started.elapsed() >= RPC_TIME_LIMIT_FLOOR);
    }
}
