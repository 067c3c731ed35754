//! Keeping a connection's produce requests in request order. Requests on one connection are
//! handled concurrently (to answer many in flight), but their appends must reach the log in
//! the order the requests arrived, as Kafka's one-request-at-a-time handling guarantees: each
//! produce takes a ticket when read and queues its appends only on its turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Turns for one connection's produce requests.
#[derive(Debug, Default)]
pub struct OrderGate {
    issued: AtomicU64,
    next: Mutex<u64>,
    notify: Notify,
}

/// Holding a turn; the next ticket's turn starts when this is dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    gate: &'a OrderGate,
}

impl OrderGate {
    /// The next ticket, taken in request order.
    pub fn ticket(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::AcqRel)
    }

    /// Waits until `ticket` is the next in line.
    pub async fn turn(&self, ticket: u64) -> Turn<'_> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if *self.next.lock().expect("order gate lock") == ticket {
                return Turn { gate: self };
            }
            notified.await;
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.gate.next.lock().expect("order gate lock") += 1;
        self.gate.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_come_in_ticket_order_whatever_order_waiters_arrive() {
        let gate = Arc::new(OrderGate::default());
        let tickets: Vec<u64> = (0..50).map(|_| gate.ticket()).collect();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for t in tickets.into_iter().rev() {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = gate.turn(t).await;
                order.lock().unwrap().push(t);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<_>>());
    }
}
