// `fieldprint verify TRANSCRIPT`: checks a generation transcript (transcript.h) by teacher-forced CPU replay.
// Exit codes: 0 verified, 1 mismatch (tampered or a different model/engine), 2 bad input or usage.
// defines: RegisterVerifyCommand
#pragma once

#include <CLI/CLI.hpp>

namespace fp::cli {

void RegisterVerifyCommand(CLI::App& app);

}  // namespace fp::cli
