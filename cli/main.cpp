// fieldprint CLI entry point. Kept tiny on purpose: each subcommand lives in its own cli/<name>_command.cpp and
// is registered here.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "demo_command.h"
#include "generate_command.h"
#include "inspect_command.h"
#include "verify_command.h"

int main(int argc, char** argv) {
  CLI::App app{"fieldprint: paged + anchor attention with off-critical-path integrity"};
  app.require_subcommand(1);
  auto* version = app.add_subcommand("version", "print the version");
  version->callback([] { std::printf("fieldprint 0.1\n"); });
  fp::cli::RegisterDemoCommand(app);
  fp::cli::RegisterGenerateCommand(app);
  fp::cli::RegisterInspectCommand(app);
  fp::cli::RegisterVerifyCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {  // a subcommand failed; it has printed why and chosen the code
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    // --help prints and exits 0; every usage error exits 2 (scripts tell "bad input" from "mismatch" = 1).
    return app.exit(e) == 0 ? 0 : 2;
  }
  return 0;
}
