#!/bin/sh
# Regenerate the example flows' prompts: espeak-ng speaks each text, sox makes it a
# telephone-ready WAV (8 kHz, mono, 16-bit PCM) with the leading silence trimmed.
# Usage: flows/prompts/make_prompts.sh   (needs espeak-ng and sox)
set -eu
cd "$(dirname "$0")"

say() {  # say NAME "text"
    espeak-ng -v en-us -s 165 -w "$1.tmp.wav" "$2"
    sox "$1.tmp.wav" -r 8000 -c 1 -b 16 -e signed-integer "$1.wav" silence 1 0.02 0.5% gain -n -3
    rm -f "$1.tmp.wav"
}

# flows/attendant.yaml
say welcome          "Thank you for calling Simple SIP."
say main_menu        "For sales, press 1. For support, press 2. To dial an extension, press 9. For the operator, press 0."
say main_menu_short  "Press 1 for sales, 2 for support, 9 for an extension, or 0 for the operator."
say invalid          "Sorry, that is not a valid choice."
say no_input         "Sorry, I did not hear a choice."
say extension        "Please enter the three digit extension."
say transferring     "Please hold while I transfer your call."
say unavailable      "Sorry, nobody is available to take your call."
say closed           "Our office is closed. Our hours are Monday to Friday, 9 A M to 6 P M."
say holiday          "Our office is closed today for the holiday."
say goodbye          "Thank you for calling. Goodbye."

# flows/voicemail.yaml
say vm_greeting      "Please leave a message after the tone. Press pound when you have finished."
say vm_saved         "Your message has been saved."
say vm_no_message    "We did not receive a message."
