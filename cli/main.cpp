// fieldprint CLI entry point (subcommands are added as the layers land).
#include <CLI/CLI.hpp>
#include <cstdio>

int main(int argc, char** argv) {
  CLI::App app{"fieldprint: paged + anchor attention with off-critical-path integrity"};
  app.require_subcommand(1);
  auto* version = app.add_subcommand("version", "print the version");
  version->callback([] { std::printf("fieldprint 0.1\n"); });
  CLI11_PARSE(app, argc, argv);
  return 0;
}
