{
  description = "Bramble: a functional, hermetic, rootless build system";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: rec {
        bramble = pkgs.rustPlatform.buildRustPackage {
          pname = "bramble";
          version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;
          src = pkgs.lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          # The sandbox helper is installed linked statically (nothing to load before `main`:
          # about 1 ms less per build step): the `static-helper` alias of .cargo/config.toml
          # rebuilds it in place, in the release dir the install step copies from.
          buildInputs = [ pkgs.glibc.static ];
          postBuild = ''
            cargo static-helper --frozen
          '';
          # The sandbox and build tests need unprivileged user namespaces and a static busybox,
          # which the Nix build sandbox does not offer: they run in CI (.ci/run) instead.
          doCheck = false;
          meta = {
            description = "A functional, hermetic, rootless build system";
            license = pkgs.lib.licenses.asl20;
            platforms = pkgs.lib.platforms.linux;
            mainProgram = "bramble";
          };
        };
        default = bramble;
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ cargo rustc clippy rustfmt cargo-nextest busybox bubblewrap gcc glibc.static ];
        };
      });
    };
}
