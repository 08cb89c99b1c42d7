//! Timeouts for waits that happen on every request, without a timer per wait.
//!
//! A `tokio::time::timeout` per wait inserts a timer into the runtime's wheel and removes
//! it again, every request (the wait for the service's answer always has to wait). A
//! connection instead keeps one [`Sleep`] per kind of wait for its whole life, and moves
//! it only when it must (the nginx way): a later deadline leaves it where it is, and when
//! it fires, the wait checks its own deadline and re-arms it for that. A busy connection
//! whose deadlines keep moving later touches the wheel about once per timeout period
//! rather than once per request.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::body::poll_once;

/// A connection's timer for one kind of wait, unarmed until a wait has to wait.
pub fn unarmed() -> Sleep {
    // Its deadline is moved before it is first polled: any wait sets it no later than
    // its own deadline.
    tokio::time::sleep_until(far_future())
}

/// `fut`, unless it is still pending `limit` from now (`None`). Polled once first: what
/// completes at once reads no clock and touches no timer.
pub async fn within<F: Future>(
    mut timer: Pin<&mut Sleep>,
    limit: Duration,
    fut: F,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(output) = poll_once(fut.as_mut()).await {
        return Some(output);
    }
    let deadline = Instant::now() + limit;
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    // `fut` was just polled with this task's waker: not again until the task wakes.
    let mut woken = false;
    std::future::poll_fn(|cx| {
        if woken && let Poll::Ready(output) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        woken = true;
        // Armed for an earlier wait's deadline, or for this one's.
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(None);
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// About thirty years from now: "never" for a timer that is moved before it matters.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_times_out_at_its_own_deadline() {
        let mut timer = std::pin::pin!(unarmed());
        let start = Instant::now();
        let out = within(
            timer.as_mut(),
            Duration::from_secs(5),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(out, None);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn ready_at_once_touches_no_timer() {
        let mut timer = std::pin::pin!(unarmed());
        let before = timer.deadline();
        assert_eq!(
            within(timer.as_mut(), Duration::from_secs(1), async { 7 }).await,
            Some(7)
        );
        assert_eq!(timer.deadline(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_left_behind_by_earlier_waits_does_not_cut_a_later_one_short() {
        let mut timer = std::pin::pin!(unarmed());
        // Many short waits that complete: the timer stays at the first one's deadline.
        for _ in 0..10 {
            let sleep = tokio::time::sleep(Duration::from_millis(100));
            assert!(
                within(timer.as_mut(), Duration::from_secs(2), sleep)
                    .await
                    .is_some()
            );
        }
        let first_deadline = timer.deadline();
        assert!(first_deadline < Instant::now() + Duration::from_secs(2));
        // A wait that began after it gets its full two seconds, not what is left.
        let start = Instant::now();
        let out = within(
            timer.as_mut(),
            Duration::from_secs(2),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(out, None);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // And one with a shorter limit than the timer's deadline moves it earlier.
        let start = Instant::now();
        let long = tokio::time::sleep(Duration::from_secs(60));
        assert!(
            within(timer.as_mut(), Duration::from_secs(60), long)
                .await
                .is_some()
        );
        let out = within(
            timer.as_mut(),
            Duration::from_secs(1),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(out, None);
        assert_eq!(start.elapsed(), Duration::from_secs(61));
    }
}
