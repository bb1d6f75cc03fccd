// `fieldprint inspect FILE.gguf`: header, metadata, tensor table and Llama hyper-parameters of a GGUF file.
#pragma once

#include <CLI/CLI.hpp>

namespace fp::cli {

// Adds the "inspect" subcommand to app.
void RegisterInspectCommand(CLI::App& app);

}  // namespace fp::cli
