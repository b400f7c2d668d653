// A lost update across an await, the shape rampart's handlers must avoid:
// read under a std lock, await, write. Holding a `std::sync::MutexGuard`
// across the `.await` makes the future not `Send`, so a multi-threaded
// runtime refuses to spawn it. (Releasing the guard before the await
// compiles — and loses updates: `races.rs` shows that half.)
use std::sync::Mutex;

fn spawn<F: std::future::Future + Send + 'static>(_: F) {}

async fn bump(counter: &'static Mutex<u64>) {
    let mut guard = counter.lock().unwrap_or_else(|e| e.into_inner());
    let read = *guard;
    std::future::ready(()).await;
    *guard = read + 1;
}

fn main() {
    static COUNTER: Mutex<u64> = Mutex::new(0);
    spawn(bump(&COUNTER));
}
