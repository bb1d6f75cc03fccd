// fieldprint CLI entry point. Kept tiny on purpose: each subcommand lives in its own cli/<name>_command.cpp and
// is registered here.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "demo_command.h"
#include "generate_command.h"
#include "inspect_command.h"

int main(int argc, char** argv) {
  CLI::App app{"fieldprint: paged + anchor attention with off-critical-path integrity"};
  app.require_subcommand(1);
  auto* version = app.add_subcommand("version", "print the version");
  version->callback([] { std::printf("fieldprint 0.1\n"); });
  fp::cli::RegisterDemoCommand(app);
  fp::cli::RegisterGenerateCommand(app);
  fp::cli::RegisterInspectCommand(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
