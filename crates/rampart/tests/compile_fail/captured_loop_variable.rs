// Go (before 1.22): `for i := 0; i < 10; i++ { go func() { use(i) }() }`
// captures the one loop variable by reference; the goroutines see
// whatever it holds when they run. Rust: a spawned thread may outlive the
// loop, so borrowing `i` is refused; `move` copies each iteration's value.
fn main() {
    let mut handles = Vec::new();
    for i in 0..10 {
        handles.push(std::thread::spawn(|| println!("{i}")));
    }
    for handle in handles {
        handle.join().ok();
    }
}
