//! placeholder
pub mod evidence;
