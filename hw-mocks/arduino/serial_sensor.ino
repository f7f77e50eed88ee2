/*
 * serial_sensor.ino - the real device behind pihub's `serial` backend on the Pi rig.
 *
 * It speaks the line protocol of hw-mocks/serial_sensor.py (the pty simulator CI uses),
 * so the same tests and hooks run against either.
 *
 * Board and link
 *   Arduino Uno or Nano (any 5 V AVR board with A0..A2), USB cable to the Pi.
 *   Uno: /dev/ttyACM0; Nano with a CH340: /dev/ttyUSB0. Prefer the stable name under
 *   /dev/serial/by-id/ in pihub's config. 9600 baud, 8N1 (Platypush's default).
 *   The pihub user needs the `dialout` group.
 *
 * Wiring
 *   A0  TMP36 temperature sensor: pin 1 (+Vs) to 5V, pin 2 (Vout) to A0, pin 3 to GND.
 *       temperature [degC] = (Vout [V] - 0.5) * 100
 *   A1  light: LDR from 5V to A1, 10 kOhm from A1 to GND. Reported raw, 0..1023.
 *   A2  "humidity": a 10 kOhm potentiometer, ends to 5V and GND, wiper to A2, mapped to
 *       0..100 %RH. A stand-in you can turn by hand to cross thresholds; swap in a real
 *       humidity sensor if you have one.
 *
 * Line protocol (both ways: one line per message, '\n' terminated)
 *   device -> host  {"temperature": 22.41, "humidity": 45.3, "light": 512}   every interval
 *                   {"ok": true, "cmd": "set"}                               reply to a command
 *   host -> device  {"cmd": "set", "temperature": 30}     pin a value (null: measure it again)
 *                   {"cmd": "interval", "value": 0.5}     seconds between readings (0: silent)
 *                   {"cmd": "read"}                       one reading now
 *                   {"cmd": "garbage"}                    one malformed line (tests the host)
 *                   {"cmd": "unplug", "seconds": 2}       refused here: pull the USB cable
 *   Every command is answered first: {"ok": true, "cmd": ...} or {"ok": false, "cmd": ...,
 *   "error": ...}. Command lines longer than 127 bytes are dropped.
 *
 * pihub config
 *   serial:
 *     device: /dev/serial/by-id/usb-Arduino__www.arduino.cc__0043_XXXX-if00
 *     baud_rate: 9600
 *     thresholds: {temperature: [24, 26]}
 *
 * Opening the port resets an Uno (DTR): the sketch boots in about 1.5 s, and the host may
 * see a partial first line, which pihub counts as malformed and skips.
 *
 * No libraries: the command parser below only finds "key": value pairs in a flat object,
 * which is all the protocol needs.
 */

#include <stdlib.h>
#include <string.h>

static const long BAUD = 9600;
static const float VREF = 5.0;  // V, the ADC reference on a 5 V board
static const unsigned int LINE_MAX = 128;

static unsigned long intervalMs = 1000;  // 0: only on "read"
static unsigned long lastReading = 0;

static bool pinnedTemperature = false, pinnedHumidity = false, pinnedLight = false;
static float valueTemperature = 0, valueHumidity = 0, valueLight = 0;

static char line[LINE_MAX];
static unsigned int lineLength = 0;
static bool lineTooLong = false;

// The text just after "key": in a flat JSON object, or NULL when the key is absent.
static const char *findValue(const char *json, const char *key) {
  char pattern[24];
  size_t n = strlen(key);
  if (n + 3 > sizeof(pattern)) return NULL;
  pattern[0] = '"';
  memcpy(pattern + 1, key, n);
  pattern[n + 1] = '"';
  pattern[n + 2] = '\0';
  const char *p = strstr(json, pattern);
  if (p == NULL) return NULL;
  p += n + 2;
  while (*p == ' ' || *p == '\t') p++;
  if (*p != ':') return NULL;
  p++;
  while (*p == ' ' || *p == '\t') p++;
  return p;
}

// Copies the string value of key into out (at most size-1 chars); false if absent.
static bool findString(const char *json, const char *key, char *out, size_t size) {
  const char *p = findValue(json, key);
  if (p == NULL || *p != '"') return false;
  p++;
  size_t i = 0;
  while (*p != '\0' && *p != '"' && i + 1 < size) out[i++] = *p++;
  out[i] = '\0';
  return *p == '"';
}

// 1: a number (stored in out), 0: absent or not a number, -1: null.
static int findNumber(const char *json, const char *key, float *out) {
  const char *p = findValue(json, key);
  if (p == NULL) return 0;
  if (strncmp(p, "null", 4) == 0) return -1;
  char *end;
  double v = strtod(p, &end);
  if (end == p) return 0;
  *out = (float)v;
  return 1;
}

static void printReply(const char *cmd, const char *error) {
  Serial.print(error == NULL ? F("{\"ok\": true") : F("{\"ok\": false"));
  if (cmd != NULL) {
    Serial.print(F(", \"cmd\": \""));
    Serial.print(cmd);
    Serial.print('"');
  }
  if (error != NULL) {
    Serial.print(F(", \"error\": \""));
    Serial.print(error);
    Serial.print('"');
  }
  Serial.println('}');
}

static float readTemperature() {
  float volts = analogRead(A0) * VREF / 1023.0;
  return (volts - 0.5) * 100.0;
}

static void printReading() {
  float temperature = pinnedTemperature ? valueTemperature : readTemperature();
  float humidity = pinnedHumidity ? valueHumidity : analogRead(A2) * 100.0 / 1023.0;
  Serial.print(F("{\"temperature\": "));
  Serial.print(temperature, 2);
  Serial.print(F(", \"humidity\": "));
  Serial.print(humidity, 1);
  Serial.print(F(", \"light\": "));
  if (pinnedLight) {
    Serial.print(valueLight, 2);
  } else {
    Serial.print(analogRead(A1));
  }
  Serial.println('}');
}

// Pins or unpins one value from a "set" command; false if the value is not a number/null.
static bool setValue(const char *json, const char *key, bool *pinned, float *value) {
  float v;
  int found = findNumber(json, key, &v);
  if (found == 1) {
    *pinned = true;
    *value = v;
  } else if (found == -1) {
    *pinned = false;
  } else if (findValue(json, key) != NULL) {
    return false;
  }
  return true;
}

static void runCommand(const char *json) {
  char cmd[16];
  if (!findString(json, "cmd", cmd, sizeof(cmd))) {
    printReply(NULL, "expected an object with a 'cmd' string");
    return;
  }
  if (strcmp(cmd, "set") == 0) {
    bool ok = setValue(json, "temperature", &pinnedTemperature, &valueTemperature) &&
              setValue(json, "humidity", &pinnedHumidity, &valueHumidity) &&
              setValue(json, "light", &pinnedLight, &valueLight);
    printReply(cmd, ok ? NULL : "values must be numbers or null");
  } else if (strcmp(cmd, "interval") == 0) {
    float seconds;
    if (findNumber(json, "value", &seconds) != 1 || seconds < 0) {
      printReply(cmd, "value must be a number of seconds >= 0");
      return;
    }
    intervalMs = (unsigned long)(seconds * 1000.0);
    lastReading = millis();
    printReply(cmd, NULL);
  } else if (strcmp(cmd, "read") == 0) {
    printReply(cmd, NULL);
    printReading();
  } else if (strcmp(cmd, "garbage") == 0) {
    printReply(cmd, NULL);
    Serial.println(F("{\"temperature\": 21.5, \"humid"));
  } else if (strcmp(cmd, "unplug") == 0) {
    printReply(cmd, "not possible on hardware: pull the USB cable");
  } else {
    printReply(cmd, "unknown command (allowed: garbage, interval, read, set, unplug)");
  }
}

static void readCommands() {
  while (Serial.available() > 0) {
    char c = (char)Serial.read();
    if (c == '\r') continue;
    if (c == '\n') {
      line[lineLength] = '\0';
      if (!lineTooLong && lineLength > 0) runCommand(line);
      lineLength = 0;
      lineTooLong = false;
    } else if (lineLength + 1 < LINE_MAX) {
      line[lineLength++] = c;
    } else {
      lineTooLong = true;  // dropped whole at its newline, as pihub drops overlong lines
    }
  }
}

void setup() {
  Serial.begin(BAUD);
  lastReading = millis();
}

void loop() {
  readCommands();
  unsigned long now = millis();
  if (intervalMs > 0 && now - lastReading >= intervalMs) {  // unsigned: safe across millis() wrap
    lastReading = now;
    printReading();
  }
}
