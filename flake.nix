{
  description = "Beat EcoProve: beat-gateway and the platform it fronts";

  inputs = {
    nixpkgs.url = "github:nixos/nixpkgs?ref=nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    auth-service.url = "github:BeatEcoprove/beat-ecoprove-auth";
    core-service.url = "github:BeatEcoprove/beat-ecoprove-core";
    messaging-service.url = "github:BeatEcoprove/beat-ecoprove-messaging";
  };

  outputs = { self, nixpkgs, flake-utils, rust-overlay, ... }@inputs:
    flake-utils.lib.eachDefaultSystem (system:
      let
        pkgs = import nixpkgs {
          inherit system;
          overlays = [ rust-overlay.overlays.default ];
        };
        lib = pkgs.lib;
        version = "1.0.0";
        rust = pkgs.rust-bin.stable."1.95.0".default.override {
          extensions = [ "rust-src" "clippy" "rustfmt" ];
        };
        rustPlatform = pkgs.makeRustPlatform { cargo = rust; rustc = rust; };

        services = import ./nix/services.nix;

        # The gateway, built from this repository.
        gateway = rustPlatform.buildRustPackage {
          pname = "beat-gateway";
          inherit version;
          src = lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          nativeBuildInputs = [ pkgs.cmake pkgs.pkg-config ];
          # The tests start servers and resolve names, which the build sandbox forbids;
          # they run in CI (scripts/test.sh) instead.
          doCheck = false;
          meta.mainProgram = "beat-gateway";
        };

        gatewayImage = pkgs.dockerTools.buildLayeredImage {
          name = "localhost/beat-gateway";
          tag = version;
          contents = [ gateway pkgs.cacert pkgs.bashInteractive ];
          extraCommands = ''
            mkdir -p app/config tmp
            cp ${./config/services.json} app/config/services.json
          '';
          config = {
            User = "10001:10001";
            WorkingDir = "/app";
            Entrypoint = [ "${gateway}/bin/beat-gateway" ];
            Cmd = [ "--services" "/app/config/services.json" ];
            Env = [ "PROXY_HOST=0.0.0.0" "PROXY_PORT=9000" "RUST_LOG=info" ];
            ExposedPorts = { "9000/tcp" = { }; };
            StopSignal = "SIGTERM";
          };
        };

        # A service image: the input's own image if it has one, else its package in a
        # layered image of our own.
        serviceImage = name: svc:
          let outputs = inputs.${name}.packages.${system} or { };
          in outputs.docker or (pkgs.dockerTools.buildLayeredImage {
            name = "localhost/${name}";
            tag = version;
            contents = [ outputs.default pkgs.cacert pkgs.tzdata ];
            config = {
              Cmd = svc.command;
              ExposedPorts = { "${toString svc.port}/tcp" = { }; };
              User = "10001:10001";
            };
          });

        images = (lib.mapAttrs serviceImage services) // { beat-gateway = gatewayImage; };

        # Load one image into $CONTAINER_TOOL (podman by default) and tag it localhost/<name>:1.0.0.
        loadScript = name: image: pkgs.writeShellScript "load-${name}" ''
          set -euo pipefail
          tool="''${CONTAINER_TOOL:-podman}"
          echo "loading ${name} into $tool"
          loaded=$("$tool" load < ${image} | sed -n 's/^Loaded image[^:]*: //p' | tail -n 1)
          "$tool" tag "$loaded" "localhost/${name}:${version}"
          echo "ready: localhost/${name}:${version}"
        '';

        app = program: { type = "app"; program = toString program; };
      in
      {
        packages = {
          default = gateway;
          beat-gateway = gateway;
          gateway-image = gatewayImage;
        } // lib.mapAttrs' (name: image: lib.nameValuePair "${name}-image" image) images;

        apps = (lib.mapAttrs (name: image: app (loadScript name image)) images) // {
          build-all = app (pkgs.writeShellScript "build-all" ''
            set -euo pipefail
            ${lib.concatStringsSep "\n" (lib.mapAttrsToList loadScript images)}
          '');
        };

        devShells.default = pkgs.mkShell {
          packages = [ rust pkgs.cmake pkgs.pkg-config pkgs.just pkgs.cargo-nextest ];
        };
      });
}
