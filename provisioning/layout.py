"""The installed layout the image and the systemd unit rely on (paths as seen on the device)."""

from __future__ import annotations

USER = "cgw"
GROUP = "cgw"
SUPPLEMENTARY_GROUPS = ("dialout", "gpio")  # serial adapters, GPIO chips (pulse inputs)
SHELL = "/usr/sbin/nologin"
GECOS = "cgw gateway"

ETC_DIR = "/etc/cgw"
CONFIG = "/etc/cgw/gateway.toml"
CONFIG_PREVIOUS = "/etc/cgw/gateway.toml.previous"
MQTT_PASSWORD = "/etc/cgw/mqtt.password"
PLATFORM_KEY = "/etc/cgw/platform.pub"
WEB_PASSWORD = "/etc/cgw/web.password"
TLS_DIR = "/etc/cgw/tls"
TLS_KEY = "/etc/cgw/tls/client.key"
TLS_CSR = "/etc/cgw/tls/client.csr"
TLS_CERT = "/etc/cgw/tls/client.pem"
TLS_CA = "/etc/cgw/tls/ca.pem"
DATA_DIR = "/var/lib/cgw"
HOME = DATA_DIR
SIGNING_KEY = "/var/lib/cgw/signing.key"
SIGNING_PUB = "/var/lib/cgw/signing.pub"
RUNTIME_DIR = "/run/cgw"
UNIT_NAME = "cgw.service"
UNIT_DIR = "/etc/systemd/system"
UNIT = f"{UNIT_DIR}/{UNIT_NAME}"
UDEV_RULES_DIR = "/etc/udev/rules.d"
SERIAL_SOURCES = (
    "/proc/device-tree/serial-number",
    "/sys/firmware/devicetree/base/serial-number",
    "/etc/machine-id",
)
