// Go (the source document, section 2.1): ten goroutines write one map;
// the runtime notices, sometimes, and dies with "fatal error: concurrent
// map writes". Rust: two threads cannot both hold `&mut` to the map, so
// the program is refused before it runs. The fix is a lock or a
// concurrent map (see benches/locks.rs).
use std::collections::HashMap;

fn main() {
    let mut m = HashMap::new();
    std::thread::scope(|s| {
        for i in 0..10 {
            s.spawn(|| {
                m.insert(i, i);
            });
        }
    });
    println!("{}", m.len());
}
