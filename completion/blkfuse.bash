# bash completion for blkfuse                                    -*- shell-script -*-
#
# Installed by make install into bash-completion's completionsdir as "blkfuse".  Stands alone
# (no bash-completion helpers needed).  The option lists here are those of 'blkfuse CMD
# --help'; tests/completion.bats fails when they drift apart.

# shellcheck disable=SC2207  # COMPREPLY=($(compgen ...)): the words have no spaces, or IFS is a newline
_blkfuse_commands="mount unmount umount list stats info create serve check bitmap map copy-ranges"
_blkfuse_formats="raw qcow2"

# Options of each command, as its --help lists them (short and long).
_blkfuse_options() {
    case $1 in
    mount)
        echo "-f --format -r --read-only --growable --cache --queues --transport -o --options
              --snapshot --snapshot-name --changed --allow-other --allow-remote-backing
              --passthrough --stats --id --daemon --foreground --log-file -v --verbose
              --help" ;;
    unmount | umount) echo "--force --help" ;;
    list | stats) echo "--json --help" ;;
    info) echo "-f --format --json --allow-remote-backing --help" ;;
    create)
        echo "-f --format -b --backing -F --backing-format --allow-remote-backing -o --options
              -p --progress --help" ;;
    serve) echo "--socket --allow-user --foreground --log-file -v --verbose --help" ;;
    check) echo "-r --repair --output -f --format -p --progress --help" ;;
    bitmap)
        echo "--add --remove --clear --enable --disable -g --granularity -f --format
              --help" ;;
    map) echo "--changed --output -f --format --help" ;;
    copy-ranges) echo "--sparse --help" ;;
    esac
}

# Options that take a value (the next word, or after '=').
_blkfuse_takes_value() {
    case $1 in
    -f | --format | --cache | --queues | --transport | -o | --options | --snapshot-name | \
        --passthrough | --stats | --id | --daemon | --log-file | -b | --backing | -F | \
        --backing-format | --socket | --allow-user | -r | --repair | --output | --changed | \
        -g | --granularity)
        [[ $1 != -r || $2 == check ]] ;;       # -r is --read-only (a flag) but for check
    *) return 1 ;;
    esac
}

# Mountpoints of this user's exports, from 'blkfuse list --json'.
_blkfuse_mountpoints() {
    blkfuse list --json 2>/dev/null |
        sed -n 's/^[[:space:]]*"mountpoint"[[:space:]]*:[[:space:]]*"\(.*\)"[[:space:]]*,\{0,1\}[[:space:]]*$/\1/p'
}

# -o KEY=VALUE lists: complete the last key.
_blkfuse_o_keys() {
    case $1 in
    mount)
        echo "format= ro rw read-only growable cache= queues= transport= snapshot snapshot-name=
              changed= allow_other allow-remote-backing passthrough= stats= id= daemon= log-file=
              verbose offset= size= l2-cache-size= locking=off aio= fault-rules=
              connections= connect-timeout= reconnect-timeout= tls-certs= tls-psk-file=
              tls-username= inline-write-max= write-behind= splice-read=" ;;
    create)
        echo "cluster_size= lazy_refcounts= extended_l2= compression_type= preallocation=
              refcount_bits= compat=" ;;
    esac
}

_blkfuse_files() {
    local IFS=$'\n'
    compopt -o filenames 2>/dev/null
    COMPREPLY=($(compgen -f -- "$1"))
}

_blkfuse() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]:-}
    local cmd="" i w nargs=0 opt="" prefix="" vprefix=""
    COMPREPLY=()

    # The command is the first word after blkfuse that is not an option.
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [[ -z $cmd ]]; then
            [[ $w != -* ]] && cmd=$w
            continue
        fi
        if [[ $w == = || ${COMP_WORDS[i + 1]:-} == = ]]; then
            continue                            # --opt = value, split by COMP_WORDBREAKS
        fi
        if [[ $w == -* ]]; then
            [[ $w != *=* ]] && _blkfuse_takes_value "$w" "$cmd" && ((i++))
            continue
        fi
        [[ ${COMP_WORDS[i - 1]} == = ]] || ((nargs++))
    done
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$_blkfuse_commands --help --version" -- "$cur"))
        return 0
    fi

    # The option whose value is being completed: "--opt VAL", "--opt=VAL", or "--opt = VAL".
    if [[ $cur == --*=* ]]; then
        # One word: '=' is not in COMP_WORDBREAKS; the replies keep "--opt=".
        opt=${cur%%=*}
        vprefix=$opt=
        cur=${cur#*=}
    elif [[ $cur == = && $prev == -* ]]; then
        opt=$prev
        cur=""
    elif [[ $prev == = && ${COMP_WORDS[COMP_CWORD - 2]:-} == -* ]]; then
        opt=${COMP_WORDS[COMP_CWORD - 2]}
    elif [[ $prev == -* ]] && _blkfuse_takes_value "$prev" "$cmd"; then
        opt=$prev
    fi
    if [[ -n $opt ]]; then
        case $opt in
        -f | --format | -F | --backing-format)
            COMPREPLY=($(compgen -W "$_blkfuse_formats" -- "$cur")) ;;
        --cache) COMPREPLY=($(compgen -W "writeback writethrough none directsync" -- "$cur")) ;;
        --transport) COMPREPLY=($(compgen -W "auto uring dev" -- "$cur")) ;;
        --passthrough) COMPREPLY=($(compgen -W "auto on off" -- "$cur")) ;;
        --stats) COMPREPLY=($(compgen -W "full coarse" -- "$cur")) ;;
        -r | --repair) COMPREPLY=($(compgen -W "leaks all" -- "$cur")) ;;
        --output) COMPREPLY=($(compgen -W "human json" -- "$cur")) ;;
        --allow-user) COMPREPLY=($(compgen -u -- "$cur")) ;;
        -b | --backing | --daemon | --socket | --log-file) _blkfuse_files "$cur" ;;
        -o | --options)
            [[ $cur == *,* ]] && prefix=${cur%,*},
            COMPREPLY=($(compgen -P "$prefix" -W "$(_blkfuse_o_keys "$cmd")" -- "${cur##*,}"))
            compopt -o nospace 2>/dev/null ;;
        esac
        if [[ -n $vprefix ]]; then
            COMPREPLY=(${COMPREPLY[@]+"${COMPREPLY[@]/#/$vprefix}"})
        fi
        return 0
    fi

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_blkfuse_options "$cmd")" -- "$cur"))
        return 0
    fi
    case $cmd in
    unmount | umount | stats)
        ((nargs == 0)) || return 0
        local IFS=$'\n'
        COMPREPLY=($(compgen -W "$(_blkfuse_mountpoints)" -- "$cur")) ;;
    mount) ((nargs < 2)) && _blkfuse_files "$cur" ;;
    info | check | map) ((nargs == 0)) && _blkfuse_files "$cur" ;;
    bitmap) ((nargs == 0)) && _blkfuse_files "$cur" ;;      # then BITMAP: nothing to offer
    create) ((nargs == 0)) && _blkfuse_files "$cur" ;;      # then SIZE: nothing to offer
    copy-ranges) ((nargs < 2)) && _blkfuse_files "$cur" ;;
    esac
    return 0
}

complete -F _blkfuse blkfuse
