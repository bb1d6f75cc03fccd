// `fieldprint generate`: load a GGUF Llama model, prefill the anchor once, chat-template the prompt, stream
// the generated text, report prefill/decode tokens/s and the verification outcome.
// defines: RegisterGenerateCommand
#pragma once

#include <CLI/CLI.hpp>

namespace fp::cli {

// Adds the `generate` subcommand to app. Failures exit non-zero (CLI::RuntimeError) with the Status printed.
void RegisterGenerateCommand(CLI::App& app);

}  // namespace fp::cli
