# The platform's services: the flake input each is built from, the port it listens on, and
# the command that starts it inside its image. The input's `packages.<system>.default` is
# the service; an input that already offers an image as `packages.<system>.docker` is
# loaded as it is.
{
  auth-service = {
    port = 2000;
    command = [ "/bin/auth-service" ];
  };
  core-service = {
    port = 3000;
    command = [ "/bin/core-service" ];
  };
  messaging-service = {
    port = 4000;
    command = [ "/bin/server" ];
  };
}
