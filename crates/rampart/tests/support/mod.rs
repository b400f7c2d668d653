//! What the library's integration tests share.

/// The seed of a seeded stress test: `RAMPART_STRESS_SEED` when set (a
/// value that is not a `u64` stops the test, rather than silently running
/// another seed), else `default`. Printed, so a failing run can be
/// replayed.
pub fn stress_seed(default: u64) -> u64 {
    let seed = match std::env::var("RAMPART_STRESS_SEED") {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(seed) => seed,
            Err(err) => panic!("RAMPART_STRESS_SEED={s:?} is not a u64: {err}"),
        },
        Err(_) => default,
    };
    println!("RAMPART_STRESS_SEED={seed} (set it to replay this run)");
    seed
}
