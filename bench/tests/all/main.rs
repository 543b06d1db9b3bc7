//! The bench's end-to-end tests that share one process (one module per
//! concern): the HTML report in a real browser and `bench timeline`. The
//! smoke run of the whole comparison (`compare.rs`) keeps a binary of its
//! own: `.ci/run` runs it as a step of its own (`--test compare`).

mod html_report;
mod timeline;
