//! Native engine tests.
