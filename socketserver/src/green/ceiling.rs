//! The connection ceiling that `vm.max_map_count` sets where stack guards
//! cost mappings: on a kernel without guard regions, each stack in use is
//! two mappings (its guard pages and its stack, split out of their slab by
//! `mprotect`), so a process that may hold `max_map_count` mappings, `used`
//! of them taken already, can hold about `(max_map_count - used) / 2`
//! connections. A server whose `max_connections` is above that (or unset)
//! closes new connections before its own limit is reached: that is worth a
//! warning at start-up; a server under it is told all is well.

/// Mappings each connection's stack costs without guard regions.
pub(crate) const MAPPINGS_PER_STACK: usize = 2;

/// Connections that `max_map_count` mappings allow, `used` of them taken.
pub(crate) fn connections(max_map_count: usize, used: usize) -> usize {
    max_map_count.saturating_sub(used) / MAPPINGS_PER_STACK
}

/// What to log about the ceiling: whether it is a warning (the ceiling is
/// below `max_connections`, or no `max_connections` is set), and the line.
pub(crate) fn message(
    max_map_count: usize,
    used: usize,
    max_connections: Option<usize>,
) -> (bool, String) {
    let ceiling = connections(max_map_count, used);
    let head = format!(
        "green stacks: this kernel has no guard regions (MADV_GUARD_INSTALL, Linux 6.13): \
         each connection's stack costs {MAPPINGS_PER_STACK} memory mappings, so \
         vm.max_map_count ({max_map_count}, {used} in use) caps this process near {ceiling} \
         connections"
    );
    match max_connections {
        Some(max) if max <= ceiling => (
            false,
            format!(
                "{head}, at or above max_connections ({max}): the server's own limit comes first"
            ),
        ),
        Some(max) => (
            true,
            format!(
                "{head}, below max_connections ({max}): past about {ceiling} connections new \
                 ones are closed at once; raise vm.max_map_count (to at least {}) or lower \
                 max_connections",
                needed(max, used)
            ),
        ),
        None => (
            true,
            format!(
                "{head}, and max_connections is not set: past about {ceiling} connections new \
                 ones are closed at once; raise vm.max_map_count or set max_connections"
            ),
        ),
    }
}

/// The `max_map_count` that `max_connections` connections need, `used`
/// mappings taken.
fn needed(max_connections: usize, used: usize) -> usize {
    max_connections
        .saturating_mul(MAPPINGS_PER_STACK)
        .saturating_add(used)
}

/// `/proc/sys/vm/max_map_count` and the mappings of this process now, if
/// they can be read.
pub(crate) fn read_limits() -> Option<(usize, usize)> {
    let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse::<usize>()
        .ok()?;
    let used = std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count());
    Some((max, used))
}

/// Logs the ceiling beside `max_connections` for a server about to run
/// under `Green`, when guards cost mappings (nothing otherwise): a
/// warning when it is below, an info line when the server's own limit
/// comes first.
pub(crate) fn report(max_connections: Option<usize>) {
    if super::stacks::guard_regions() {
        return;
    }
    let Some((max, used)) = read_limits() else {
        log::warn!(
            "green stacks: this kernel has no guard regions (MADV_GUARD_INSTALL, Linux 6.13): \
             each connection's stack costs {MAPPINGS_PER_STACK} memory mappings, limited by \
             vm.max_map_count (unreadable here)"
        );
        return;
    };
    match message(max, used, max_connections) {
        (true, line) => log::warn!("{line}"),
        (false, line) => log::info!("{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_is_half_the_free_mappings() {
        assert_eq!(connections(65_530, 130), 32_700);
        assert_eq!(connections(65_530, 131), 32_699);
        assert_eq!(connections(100, 200), 0, "more in use than allowed");
    }

    #[test]
    fn a_ceiling_below_max_connections_is_a_warning_that_says_what_to_raise() {
        let (warn, line) = message(65_530, 130, Some(50_000));
        assert!(warn);
        assert!(
            line.contains("caps this process near 32700 connections"),
            "{line}"
        );
        assert!(line.contains("below max_connections (50000)"), "{line}");
        // 50,000 stacks of 2 mappings, and the 130 in use.
        assert!(line.contains("at least 100130"), "{line}");
    }

    #[test]
    fn no_max_connections_is_a_warning() {
        let (warn, line) = message(65_530, 130, None);
        assert!(warn);
        assert!(line.contains("max_connections is not set"), "{line}");
        assert!(line.contains("32700"), "{line}");
    }

    #[test]
    fn a_ceiling_at_or_above_max_connections_is_fine() {
        for max in [10_000, 32_700] {
            let (warn, line) = message(65_530, 130, Some(max));
            assert!(!warn, "{line}");
            assert!(
                line.contains(&format!("at or above max_connections ({max})")),
                "{line}"
            );
        }
        let (warn, _) = message(65_530, 130, Some(32_701));
        assert!(warn, "one past the ceiling");
    }

    #[test]
    fn this_machine_s_limits_can_be_read() {
        if !std::path::Path::new("/proc/sys/vm/max_map_count").exists() {
            println!("skipped: no /proc/sys/vm/max_map_count here");
            return;
        }
        let (max, used) = read_limits().expect("max_map_count and maps");
        assert!(max > 0 && used > 0, "{max} {used}");
    }
}
