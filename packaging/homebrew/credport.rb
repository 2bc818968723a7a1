# Homebrew formula for credport. Written to Homebrew's conventions (`brew style`,
# `brew audit --new`); it is NOT built or run by credport's CI, which runs on Debian.
# At a release: set `url` to the tag's tarball and `sha256` to its checksum
# (`brew fetch --build-from-source ./credport.rb` prints it), then `brew install --build-from-source`.
class Credport < Formula
  desc "Per-project, per-stage AWS credentials for every SDK from one local daemon"
  homepage "https://github.com/credport/credport"
  url "https://github.com/credport/credport/archive/refs/tags/v0.1.0.tar.gz"
  # Placeholder: replace with the release tarball's checksum.
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license any_of: ["MIT", "Apache-2.0"]
  head "https://github.com/credport/credport.git", branch: "main"

  depends_on "rust" => :build

  def install
    system "cargo", "install", *std_cargo_args
    generate_completions_from_executable(bin/"credport", "completions")
    mkdir "manpages" do
      system bin/"credport", "man", "--out", "."
      man1.install Dir["*.1"]
    end
  end

  def caveats
    <<~EOS
      Start the daemon at login (a launchd agent running `credport serve`):
        brew services start credport
      or let credport write its own agent with your config's listen address:
        credport service install
      Then, in a project: credport init
    EOS
  end

  # The launchd agent: serve on the configured address (default 127.0.0.1:9911), restart
  # on failure, log to Homebrew's var/log.
  service do
    run [opt_bin/"credport", "serve"]
    run_at_load true
    keep_alive successful_exit: false
    environment_variables RUST_LOG: "credport=info"
    log_path var/"log/credport.log"
    error_log_path var/"log/credport.log"
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/credport --version")
    assert_match "_credport", shell_output("#{bin}/credport completions bash")
    port = free_port
    pid = spawn bin/"credport", "serve", "--listen", "127.0.0.1:#{port}"
    begin
      sleep 3
      assert_match "\"status\":\"ok\"", shell_output("curl -fsS http://127.0.0.1:#{port}/healthz")
    ensure
      Process.kill("TERM", pid)
      Process.wait(pid)
    end
  end
end
