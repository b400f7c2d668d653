// Go/Java (section 2.2, SharedResource.write): a writer assigns several
// fields of a shared object while readers read them; a reader can see the
// new balance with the old version. Rust: what is shared (`Arc`) is
// read-only; writing it needs a lock (all fields under one guard) or a
// new snapshot swapped in whole (arc-swap).
use std::sync::Arc;

struct Account {
    balance: u64,
    version: u64,
}

fn main() {
    let shared = Arc::new(Account { balance: 0, version: 0 });
    let writer = Arc::clone(&shared);
    let thread = std::thread::spawn(move || {
        writer.balance = 100;
        writer.version += 1;
    });
    println!("{} {}", shared.balance, shared.version);
    thread.join().ok();
}
