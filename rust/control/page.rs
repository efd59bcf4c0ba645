// SPDX-License-Identifier: GPL-2.0

//! Writing a configfs attribute's page.

use kernel::fmt::{self, Write as _};
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;

/// Writes `args` to a configfs page and returns the length.
pub(crate) fn show_fmt(page: &mut [u8; PAGE_SIZE], args: fmt::Arguments<'_>) -> Result<usize> {
    let mut w = kernel::str::Formatter::new(page);
    w.write_fmt(args)?;
    Ok(w.bytes_written())
}

/// Shows a path attribute (an empty line when unset).
pub(crate) fn show_path(page: &mut [u8; PAGE_SIZE], path: Option<&CStr>) -> Result<usize> {
    match path {
        Some(p) => show_fmt(page, fmt!("{}\n", p.to_str()?)),
        None => show_fmt(page, fmt!("\n")),
    }
}
