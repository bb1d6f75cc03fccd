// `fieldprint demo`: builds a paged KV cache with an anchor in memory, runs the CPU reference of
// PagedFieldprintAttention and checks it against the fp64 oracle.
// defines: RegisterDemoCommand
#pragma once

#include <CLI/CLI.hpp>

namespace fp::cli {

// Adds the `demo` subcommand to app. A failed accuracy check exits non-zero (CLI::RuntimeError).
void RegisterDemoCommand(CLI::App& app);

}  // namespace fp::cli
