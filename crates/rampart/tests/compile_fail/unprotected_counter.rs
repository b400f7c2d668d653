// Go (section 4.4, TestCounter_Race): a thousand goroutines run
// `counter++` on one int; increments are lost and only `-race` tells.
// Rust: a shared `&mut` to the counter is refused. The fix is an atomic
// (`AtomicU64::fetch_add`) or a lock.
fn main() {
    let mut counter = 0;
    std::thread::scope(|s| {
        for _ in 0..1000 {
            s.spawn(|| counter += 1);
        }
    });
    assert_eq!(counter, 1000);
}
