//! Which embedded engine a store benchmark measures (docs/storage.md).

use holdfast::store::Engine;

/// The engine under test: `HOLDFAST_BENCH_ENGINE`, or the default.
pub fn bench_engine() -> Option<Engine> {
    let name = std::env::var("HOLDFAST_BENCH_ENGINE").ok().filter(|n| !n.is_empty())?;
    let engine = Engine::from_name(&name).unwrap_or_else(|| panic!("HOLDFAST_BENCH_ENGINE={name}: unknown engine"));
    assert!(
        engine.is_built(),
        "HOLDFAST_BENCH_ENGINE={name}: build with --features {}",
        engine.feature().unwrap_or("")
    );
    Some(engine)
}
